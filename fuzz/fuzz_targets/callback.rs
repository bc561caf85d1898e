//! Fuzz target `callback`: runs [`fuzz::callback`] on every input; a panic is a finding. Run with
//! `cargo +nightly fuzz run callback --features libfuzzer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::callback(data));
