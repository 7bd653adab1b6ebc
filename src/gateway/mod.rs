//! The mio shell: sockets, the poll loop, timers and signals. It moves bytes
//! and time into the core (`proto`) and carries the core's actions out.

pub mod conn;
pub mod event_loop;
pub mod http_api;
pub mod listen;
pub mod metrics;
pub mod nonblocking;
pub mod notify;
pub mod outqueue;
pub mod pool;
pub mod setup;
pub mod timer;
pub mod tls;
