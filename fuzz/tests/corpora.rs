//! Replays every committed corpus (`fuzz/corpus/<target>/`) through its fuzz check on stable, so CI
//! checks what the fuzzers found without nightly; a new crash saved by `cargo fuzz` in
//! `fuzz/artifacts/<target>/` is replayed too, until it is fixed and moved into the corpus.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut inputs = 0;
    for dir in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{target}: {} panics", path.display());
            inputs += 1;
        }
    }
    assert!(inputs >= 5, "{target}: the corpus has only {inputs} inputs");
}

#[test]
fn callback_corpus() {
    replay("callback", fuzz::callback);
}

#[test]
fn api_request_corpus() {
    replay("api_request", fuzz::api_request);
}

#[test]
fn job_decode_corpus() {
    replay("job_decode", fuzz::job_decode);
}

#[test]
fn management_api_corpus() {
    replay("management_api", fuzz::management_api);
}
