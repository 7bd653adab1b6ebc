//! A node of a tether cluster (SPEC §9): several gateways as one over Redis.

pub mod batch;
pub mod directed;
mod echoes;
pub mod envelope;
pub mod features;
pub mod gather;
pub mod history;
pub mod host_relay;
pub mod hosts;
mod keys;
pub mod node;
pub mod numbering;
pub mod presence;
pub mod presence_node;
pub mod scripts;
pub mod tap;

pub use directed::{Directed, DirectedOp, DirectedQueue, PendingAck};
pub use gather::{Gather, Gathers};
pub use hosts::{Claim, ClaimOut, ClusterHosts, HostOut, RemotePending, Served};
pub use node::{memory_ceiling, Node, NodeConfig};
pub use tap::{ClusterStatus, ClusterTap, Forward, HttpReply, RoomKind};
