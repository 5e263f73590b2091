//! Tests of userdata through the client API.
