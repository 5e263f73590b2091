//! Unit tests of the router's state machines.
