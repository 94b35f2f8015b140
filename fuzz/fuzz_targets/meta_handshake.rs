#![no_main]
//! `hookline_ingest::verify::meta_handshake`: the first line is the channel's verify token, the
//! rest the query string of the GET.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hookline_fuzz::fuzz_meta_handshake(data);
});
