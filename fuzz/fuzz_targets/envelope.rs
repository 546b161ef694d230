#![no_main]
//! See `outpost_fuzz::envelope` (fuzz/src/lib.rs) for what this target checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| outpost_fuzz::envelope(data));
