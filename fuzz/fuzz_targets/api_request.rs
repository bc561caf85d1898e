//! Fuzz target `api_request`: runs [`fuzz::api_request`] on every input; a panic is a finding. Run with
//! `cargo +nightly fuzz run api_request --features libfuzzer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::api_request(data));
