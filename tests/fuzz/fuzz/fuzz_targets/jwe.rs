#![no_main]
// The invariants live in keygate-fuzz (tests/fuzz/src/jwe.rs), shared with the stable
// proptest run.
libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate_fuzz::jwe::check(data));
