//! Fuzz target `job_decode`: runs [`fuzz::job_decode`] on every input; a panic is a finding. Run with
//! `cargo +nightly fuzz run job_decode --features libfuzzer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::job_decode(data));
