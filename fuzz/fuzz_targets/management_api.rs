//! Fuzz target `management_api`: runs [`fuzz::management_api`] on every input; a panic is a finding. Run with
//! `cargo +nightly fuzz run management_api --features libfuzzer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::management_api(data));
