//! What runs on top of the WebSocket layer: the core (`proto`), or an echo.

use crate::proto::hub::Hub;

/// What runs on top of the WebSocket layer.
pub enum App {
    Gateway(Box<Hub>),
    /// Echo every message back verbatim: for conformance tests and benchmarks.
    Echo,
}
