#![no_main]
//! `hookline_ingest::verify::verify` for a Twilio channel. Input format: `fuzz/src/lib.rs`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hookline_fuzz::fuzz_verify(hookline_shared::Source::Twilio, data);
});
