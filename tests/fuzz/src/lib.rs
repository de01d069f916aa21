//! Fuzz targets for the parsers that read what an attacker controls: the
//! `Authorization` header and the grant token in it ([`token`]), a sealed vault record
//! ([`jwe`]), the upstream's SSE stream ([`sse`]) and the config file ([`config`]).
//!
//! Each target is one function, `check(data: &[u8])`, that turns arbitrary bytes into
//! an input (often a "mutation program" applied to a valid seed, so that random bytes
//! reach deep paths) and asserts **invariants**, not just "no panic": a token is never
//! accepted with a wrong checksum, a tampered JWE never opens, any chunking of a stream
//! gives what the whole buffer gives, every config error names its setting and none
//! echoes a secret. A failed invariant panics, which both drivers report:
//!
//! - `tests/short.rs` (stable, CI): proptest feeds each target `KG_FUZZ_CASES` random
//!   inputs (default 256; `tests/run.sh` runs more).
//! - `fuzz/` (cargo-fuzz, nightly, libFuzzer): the same functions, coverage-guided, for
//!   the long runs recorded in docs/FUZZING.md.
// A fuzz target's job is to fail loudly: a broken invariant panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod config;
pub mod jwe;
pub mod sse;
pub mod token;

/// Reads an input's bytes as a sequence of small decisions. Past the end every read
/// returns zero, so every byte string is a valid (if short) program.
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    pub fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// A number in `0..n` (`0` when `n` is 0), from two bytes.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let v = usize::from(self.byte()) << 8 | usize::from(self.byte());
        v % n
    }

    /// Up to `max` raw bytes (the count from one byte).
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let want = self.below(max + 1);
        let start = self.pos.min(self.data.len());
        let end = (start + want).min(self.data.len());
        self.pos = start + want;
        &self.data[start..end]
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        self.pos = self.data.len();
        &self.data[start..]
    }
}
