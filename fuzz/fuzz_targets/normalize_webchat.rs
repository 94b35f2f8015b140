#![no_main]
//! `hookline_normalizer::normalize` for source webchat. Input format: `fuzz/src/lib.rs`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hookline_fuzz::fuzz_normalize(hookline_shared::Source::Webchat, data);
});
