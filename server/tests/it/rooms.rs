//! Tests of rooms in the server core.
