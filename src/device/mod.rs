//! PID 1 (outpost-init).
