//! Tests of the server core against real SQLite files and a real PostgreSQL.

mod accounts;
mod backfill;
mod federation_queue;
mod media;
mod replaced;
mod rooms;
mod storage;
