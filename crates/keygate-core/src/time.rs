use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, OpenAI's convention for `created`-style fields.
pub type UnixTime = u64;

/// The current time as [`UnixTime`]; a clock before 1970 reads as 0 rather than failing.
pub fn now() -> UnixTime {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
