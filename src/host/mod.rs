//! The operator CLI.
