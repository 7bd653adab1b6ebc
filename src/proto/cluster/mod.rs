//! A node of a tether cluster (SPEC §9): several gateways as one over Redis.

pub mod batch;
pub mod directed;
pub mod envelope;
pub mod gather;
pub mod node;
pub mod tap;

pub use directed::{Directed, DirectedOp, DirectedQueue, PendingAck};
pub use gather::{Gather, Gathers};
pub use node::{memory_ceiling, Node, NodeConfig};
pub use tap::{ClusterStatus, ClusterTap, Forward, RoomKind};
