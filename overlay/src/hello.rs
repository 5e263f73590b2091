//! The hello exchanged first on a peer link's control stream, and its negotiation.
//!
//! Each side states the highest protocol version it speaks, its capability bits and an optional
//! 32-byte network id. The link uses the lower version (if both still speak it) and the
//! intersection of the capabilities, so an older and a newer node still peer. Closed networks:
//! the ids must be equal (both absent, or both the same), otherwise the link is refused. The
//! encoding lives with the other wire formats in [`crate::wire`].

pub use crate::wire::{
    CAPABILITIES, HELLO_MAGIC, Hello, HelloError, MIN_VERSION, Negotiated, VERSION, negotiate,
};
