//! Integration tests: real nodes, real HTTP, real SQLite files and a real PostgreSQL.

mod accounts;
mod bad_input;
mod clients;
mod config;
mod connections;
mod deactivation;
mod device_lists;
mod e2ee;
mod federation;
mod federation_directory;
mod federation_e2ee;
mod federation_history;
mod federation_merge;
mod federation_tls;
mod hostile;
mod media;
mod metrics;
mod notifications;
mod restart;
mod rooms;
mod signatures;
mod support;
mod sync;
mod to_device;
mod userdata;
mod visibility;
