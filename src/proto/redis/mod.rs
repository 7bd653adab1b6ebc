//! The broker link of SPEC §9: RESP2 and one Redis connection, sans-IO.

pub mod backoff;
pub mod link;
pub mod resp;

pub use link::{Full, Link, LinkConfig, LinkEvent, Role, INBOX_BYTES};
pub use resp::{Limits, Value};
