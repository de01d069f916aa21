#![no_main]
// The invariants live in keygate-fuzz (tests/fuzz/src/sse.rs), shared with the stable
// proptest run.
libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate_fuzz::sse::check(data));
