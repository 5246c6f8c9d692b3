//! Losing NATS: a crashed server, a silently stalled network path. Interest
//! must survive both without anyone re-subscribing, and health must follow.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use ferrocast_core::backplane::{Backplane, BackplaneError};
use ferrocast_core::metrics as names;
use ferrocast_testkit::{metric, NatsServer, TcpProxy};

use common::publication;

/// One recorder for the whole test binary, to read counters back.
fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).unwrap();
        handle
    })
}

fn logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("ferrocast_backplane_nats=debug")
            .with_test_writer()
            .try_init();
    });
}

/// kill -9 of nats-server while subscribed: health goes down within the
/// timeout, publishing fails at once, and after the restart a subscription
/// made before the outage receives again, with nobody re-subscribing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn survives_a_server_crash() {
    logs();
    let metrics = metrics();
    let timeout = Duration::from_secs(2);
    let mut server = NatsServer::start();
    let url = server.url();

    let common::Pair {
        publisher_id,
        publisher,
        subscriber,
        sink,
    } = common::start_pair("crash", &url, &url, timeout).await;
    subscriber
        .subscribe(vec![common::filter("crash.*")])
        .await
        .unwrap();
    publisher
        .publish(publication("crash.a", "1", &publisher_id), None)
        .await
        .unwrap();
    assert!(
        sink.wait_for(1, Duration::from_secs(5)).await,
        "no delivery before the crash"
    );
    let reconnects_before = metric(&metrics.render(), names::BACKPLANE_RECONNECTS, &[]);

    server.kill9();
    let mut health = subscriber.health();
    let took = common::wait_health(&mut health, false, timeout)
        .await
        .expect("health still true after the server was killed");
    eprintln!("health false {took:?} after kill -9");
    let mut publisher_health = publisher.health();
    common::wait_health(&mut publisher_health, false, timeout)
        .await
        .unwrap();

    // Publishing during the outage fails at once, without waiting on NATS.
    let started = Instant::now();
    let result = publisher
        .publish(publication("crash.a", "lost", &publisher_id), None)
        .await;
    assert!(
        matches!(result, Err(BackplaneError::Unavailable(_))),
        "publish during the outage: {result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "publish took {:?} to fail",
        started.elapsed()
    );
    // So does subscribing; the interest is kept for later.
    let late = common::filter("crash.late");
    assert!(matches!(
        subscriber.subscribe(vec![late.clone()]).await,
        Err(BackplaneError::Unavailable(_))
    ));

    server.restart();
    let restarted = Instant::now();
    let took = common::wait_health(&mut health, true, Duration::from_secs(5))
        .await
        .expect("health not back within 5 s of the restart");
    eprintln!("health true {took:?} after the restart");
    common::wait_health(&mut publisher_health, true, Duration::from_secs(5))
        .await
        .unwrap();

    // Nobody re-subscribes: the subscription from before the crash delivers.
    let before = sink.len();
    assert!(
        common::publish_until_received(
            &publisher,
            "crash.b",
            &publisher_id,
            &sink,
            before + 1,
            Duration::from_secs(5).saturating_sub(restarted.elapsed()),
        )
        .await,
        "the subscription made before the crash receives nothing after the restart"
    );
    let (via, received) = sink.all().last().cloned().unwrap();
    assert_eq!(via, common::filter("crash.*"));
    assert_eq!(received.topic.as_str(), "crash.b");
    // And the filter subscribed during the outage was applied on reconnect
    // (`crash.late` matches both filters).
    let before = sink.len();
    publisher
        .publish(publication("crash.late", "2", &publisher_id), None)
        .await
        .unwrap();
    assert!(sink.wait_for(before + 2, Duration::from_secs(5)).await);
    assert!(
        sink.all().iter().any(|(via, _)| *via == late),
        "the filter subscribed during the outage receives nothing"
    );

    let reconnects = metric(&metrics.render(), names::BACKPLANE_RECONNECTS, &[]);
    assert!(
        reconnects >= reconnects_before + 2.0,
        "reconnects counted: {reconnects_before} -> {reconnects}"
    );
    assert!(metric(&metrics.render(), names::BACKPLANE_RECEIVED, &[]) >= 2.0);
}

/// A path that stops forwarding without closing (the TCP proxy stalls): the
/// backplane notices through its pings, reports down, reconnects through the
/// proxy once it forwards again, and delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn detects_a_stalled_path() {
    logs();
    let timeout = Duration::from_secs(1);
    let server = NatsServer::start();
    let proxy = TcpProxy::start(([127, 0, 0, 1], server.port()).into())
        .await
        .unwrap();

    let proxied = format!("nats://{}", proxy.addr());
    let common::Pair {
        publisher_id,
        publisher,
        subscriber: stalled,
        sink,
    } = common::start_pair("stall", &server.url(), &proxied, timeout).await;
    stalled
        .subscribe(vec![common::filter("stall.>")])
        .await
        .unwrap();
    publisher
        .publish(publication("stall.a", "1", &publisher_id), None)
        .await
        .unwrap();
    assert!(sink.wait_for(1, Duration::from_secs(5)).await);

    proxy.set_stalled(true);
    let mut health = stalled.health();
    // async-nats pings every timeout/3 without traffic from the server and
    // gives up at the third unanswered tick, i.e. within `timeout` of the last
    // byte received. The margin covers the event hop to the monitor task
    // (woken at once, or by its 100 ms poll) and scheduling on a busy test
    // machine.
    let margin = Duration::from_millis(500);
    let took = common::wait_health(&mut health, false, timeout + margin)
        .await
        .unwrap_or_else(|| panic!("stall not detected within {:?}", timeout + margin));
    eprintln!("stall detected after {took:?} (timeout {timeout:?})");
    // Reconnecting through the stalled path fails (the handshake times out):
    // health stays down, and publishing fails at once.
    assert!(
        common::wait_health(&mut health, true, 3 * timeout)
            .await
            .is_none(),
        "reported up through a stalled path"
    );
    let result = stalled
        .publish(publication("stall.a", "lost", &publisher_id), None)
        .await;
    assert!(
        matches!(result, Err(BackplaneError::Unavailable(_))),
        "{result:?}"
    );

    proxy.set_stalled(false);
    let took = common::wait_health(&mut health, true, Duration::from_secs(10))
        .await
        .expect("no recovery within 10 s of the path forwarding again");
    eprintln!("recovered {took:?} after the path forwarded again");
    assert!(
        common::publish_until_received(
            &publisher,
            "stall.b",
            &publisher_id,
            &sink,
            2,
            Duration::from_secs(5),
        )
        .await,
        "no delivery after the stall"
    );
}
