//! What runs on top of the WebSocket layer: the core (`proto`), or an echo.

use crate::proto::hub::Hub;

/// What runs on top of the WebSocket layer.
pub enum App {
    Gateway(Box<Hub>),
    /// Echo every message back verbatim: for conformance tests and benchmarks.
    Echo,
}

impl App {
    /// The core, unless this is the echo server.
    pub fn hub_mut(&mut self) -> Option<&mut Hub> {
        match self {
            App::Gateway(hub) => Some(hub),
            App::Echo => None,
        }
    }
}
