//! The mio shell: sockets, the poll loop, timers and signals. It moves bytes
//! and time into the core (`proto`) and carries the core's actions out.
//!
//! `server` runs the loop; `accept` admits clients (`held` counts what its
//! bounds need); `conns` is the set of client connections (with `conn`,
//! `outqueue`, `pool`, `timer` below it);
//! `endpoint` is where other endpoint kinds join the same poll and wheel;
//! `nofile` checks the descriptor limit at start, `fd_limit` meets it.

pub mod accept;
pub mod app;
pub mod assets;
pub mod auth_proxy;
pub mod backend;
pub mod bridges;
pub mod broker;
pub mod config;
pub mod conn;
pub mod conns;
pub mod dashboard;
pub mod endpoint;
pub mod fd_limit;
pub mod held;
pub mod http_api;
pub mod http_cluster;
pub mod http_pool;
pub mod http_tls;
pub mod listen;
pub mod metrics;
pub mod nofile;
pub mod nonblocking;
pub mod notify;
pub mod outqueue;
pub mod pool;
pub mod program;
pub mod server;
pub mod setup;
pub mod timer;
pub mod tls;

pub use app::App;
pub use server::Server;

/// The loop's former module path, kept for `main.rs` and older callers.
pub mod event_loop {
    pub use super::app::App;
    pub use super::config::{ReloadFn, Reloaded, ShellConfig};
    pub use super::server::Server;
}
