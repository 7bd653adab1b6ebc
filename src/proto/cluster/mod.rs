//! A node of a tether cluster (SPEC §9): several gateways as one over Redis.

pub mod envelope;
pub mod node;
pub mod tap;

pub use node::{Node, NodeConfig};
pub use tap::{ClusterStatus, ClusterTap, Forward, RoomKind};
