//! Soak: placeholder replaced below.
use anyhow::Result;

pub struct Opts {
    pub requests: u64,
    pub concurrency: usize,
    pub seed: u64,
}

pub async fn run(_opts: Opts) -> Result<()> {
    Ok(())
}
