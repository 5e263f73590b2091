//! `grove-bench`: starts a node and measures it (filled in with the client API).

fn main() {}
