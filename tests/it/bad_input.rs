//! Bad input: malformed JSON, wrong types, huge bodies, unknown endpoints, bad tokens.
