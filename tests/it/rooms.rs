//! Tests of rooms through the client API.
