//! The Redis backplane (being built).
