//! Tests of accounts through the client API.
