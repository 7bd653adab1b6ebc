//! permessage-deflate (RFC 7692, SPEC §12), sans-IO: the offer negotiation
//! and the codec.
//!
//! tether always answers with `server_no_context_takeover` and
//! `client_no_context_takeover`, whatever the client offered (RFC 7692
//! §7.1.1 lets a server add both): every message is compressed and inflated
//! on its own, so a connection keeps no compression state at all, and one
//! compressor and one inflater serve the whole process.

mod codec;
mod offer;

pub use codec::{Deflater, InflateError, Inflater, RSV1};
pub use offer::{negotiate, Agreed};
