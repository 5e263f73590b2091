//! Integration tests of the overlay: routers wired together in virtual time, and seeded simulations held to their targets.
