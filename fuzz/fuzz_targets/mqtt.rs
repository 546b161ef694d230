#![no_main]
//! See `outpost_fuzz::mqtt` (fuzz/src/lib.rs) for what this target checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| outpost_fuzz::mqtt(data));
