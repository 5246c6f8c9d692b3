//! The NATS backplane (being built).
