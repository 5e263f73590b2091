//! Assembling `/sync` responses from the stream of changes between two positions.
