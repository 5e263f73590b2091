//! Tests of sync through the client API.
