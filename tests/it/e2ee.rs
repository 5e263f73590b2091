//! Tests of e2ee through the client API.
