#![no_main]
//! See `outpost_fuzz::config` (fuzz/src/lib.rs) for what this target checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| outpost_fuzz::config(data));
