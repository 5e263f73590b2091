//! Tests of accounts in the server core.
