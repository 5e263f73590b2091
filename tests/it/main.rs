//! Integration tests: real nodes, real HTTP, real SQLite files and a real PostgreSQL.

mod accounts;
mod bad_input;
mod clients;
mod config;
mod e2ee;
mod federation;
mod federation_e2ee;
mod metrics;
mod restart;
mod rooms;
mod support;
mod sync;
mod userdata;
