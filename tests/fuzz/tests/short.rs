//! The short fuzz run (stable, CI): proptest feeds every target random byte strings.
//! `KG_FUZZ_CASES` sets how many per target (default 256; `tests/run.sh` runs more).
//! The long coverage-guided runs use the same targets through cargo-fuzz (`fuzz/`,
//! docs/FUZZING.md).

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

fn config() -> Config {
    let cases = std::env::var("KG_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    Config {
        cases,
        // A failure prints its input; nothing is written into the source tree.
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    }
}

/// Inputs: up to `max` random bytes.
fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn authorization_header_and_token(data in bytes(256)) {
        keygate_fuzz::token::check(&data);
    }

    #[test]
    fn jwe_open(data in bytes(256)) {
        keygate_fuzz::jwe::check(&data);
    }

    #[test]
    fn sse_usage_scanner(data in bytes(1024)) {
        keygate_fuzz::sse::check(&data);
    }

    #[test]
    fn sse_real_chat_stream_any_chunking(data in bytes(64)) {
        keygate_fuzz::sse::check_real_chat(&data);
    }

    #[test]
    fn config_loader(data in bytes(512)) {
        keygate_fuzz::config::check(&data);
    }
}
