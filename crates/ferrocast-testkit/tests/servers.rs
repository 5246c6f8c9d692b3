//! The test servers start, die and restart on the same port.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ferrocast_testkit::{NatsServer, RedisServer};

fn exchange(port: u16, send: &[u8], expect_prefix: &[u8]) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(send).unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(expect_prefix),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}

#[test]
fn redis_server_answers_and_restarts() {
    let mut redis = RedisServer::start();
    exchange(redis.port(), b"PING\r\n", b"+PONG");
    redis.kill9();
    assert!(TcpStream::connect(("127.0.0.1", redis.port())).is_err());
    redis.restart();
    exchange(redis.port(), b"PING\r\n", b"+PONG");
}

#[test]
fn nats_server_answers_and_restarts() {
    let mut nats = NatsServer::start();
    exchange(nats.port(), b"", b"INFO ");
    nats.kill9();
    nats.restart();
    exchange(nats.port(), b"", b"INFO ");
}

#[test]
fn redis_commands_and_subscriber_counts() {
    let redis = RedisServer::start();
    assert_eq!(redis.command(&["PING"]).unwrap(), "+PONG\r\n");
    assert_eq!(redis.subscribers("nobody").unwrap(), 0);
}
