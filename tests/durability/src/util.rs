//! Small pieces both modes use: a seeded random source, reading one Prometheus value,
//! and searching bytes for a secret.

use std::path::{Path, PathBuf};

/// splitmix64: deterministic from a seed, so a run's choice of operations can be
/// replayed with `KG_DURA_SEED` (timing, and so where kills land, cannot).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// An index into `weights`, chosen in proportion to them.
    pub fn weighted(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        let mut at = self.below(total);
        for (i, w) in weights.iter().enumerate() {
            if at < *w {
                return i;
            }
            at -= w;
        }
        weights.len() - 1
    }
}

/// A seed from the clock, when none is given.
pub fn time_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ u64::from(std::process::id())
}

/// The value of the sample `name` (with its labels exactly as written, e.g.
/// `keygate_store_flush_seconds_count{writer="usage"}`) in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, _)) = needle.split_first() else {
        return true;
    };
    haystack
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == first)
        .any(|(i, _)| haystack[i..].starts_with(needle))
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            out.extend(files_under(&entry.path())?);
        } else {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// Searches a body that arrives in chunks for several needles, across chunk borders.
pub struct StreamScan<'a> {
    needles: &'a [Vec<u8>],
    carry: Vec<u8>,
    pub hits: usize,
    pub bytes: u64,
}

impl<'a> StreamScan<'a> {
    pub fn new(needles: &'a [Vec<u8>]) -> Self {
        Self {
            needles,
            carry: Vec::new(),
            hits: 0,
            bytes: 0,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        let mut window = std::mem::take(&mut self.carry);
        window.extend_from_slice(chunk);
        for n in self.needles {
            if contains(&window, n) {
                self.hits += 1;
            }
        }
        // Keep what a needle could still complete: the longest needle minus one byte.
        let keep = self
            .needles
            .iter()
            .map(Vec::len)
            .max()
            .unwrap_or(1)
            .saturating_sub(1);
        let from = window.len().saturating_sub(keep);
        self.carry = window.split_off(from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_needle_split_across_chunks_once() {
        let needles = vec![b"sk-canary".to_vec()];
        let mut scan = StreamScan::new(&needles);
        scan.feed(b"xxsk-ca");
        scan.feed(b"nary yy");
        scan.feed(b"zz");
        assert_eq!(scan.hits, 1);
        assert!(contains(b"a sk-canary b", b"sk-canary"));
        assert!(!contains(b"sk-canar", b"sk-canary"));
    }

    #[test]
    fn reads_a_labelled_sample() {
        let text = "# HELP x\nkeygate_store_flush_seconds_count{writer=\"usage\"} 12\n";
        assert_eq!(
            metric(text, "keygate_store_flush_seconds_count{writer=\"usage\"}"),
            Some(12.0)
        );
        assert_eq!(metric(text, "keygate_store_flush_seconds_count"), None);
    }

    #[test]
    fn weighted_choice_stays_in_range() {
        let mut rng = Rng::new(7);
        for _ in 0..1000 {
            assert!(rng.weighted(&[1, 0, 3]) != 1);
        }
    }
}
