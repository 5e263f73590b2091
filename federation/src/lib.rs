//! The Matrix server-server API of a Grove node, carried over overlay sessions (and, for DNS
//! server names, ordinary TLS).
//!
//! It depends on the server core and the overlay; the overlay knows nothing of it.
