use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The clock the server reads "now" from. Production uses the system clock; tests use
/// a manual one so expiry, day and month boundaries can be crossed without sleeping.
/// Cheap to clone: clones of a manual clock share one time.
#[derive(Clone, Debug, Default)]
pub struct Clock(Option<Arc<AtomicU64>>);

impl Clock {
    pub fn system() -> Self {
        Self(None)
    }

    /// A clock that stands still at `at` until moved with [`Clock::set`] or
    /// [`Clock::advance`].
    pub fn manual(at: UnixTime) -> Self {
        Self(Some(Arc::new(AtomicU64::new(at))))
    }

    pub fn now(&self) -> UnixTime {
        match &self.0 {
            None => now(),
            Some(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock; the system clock ignores it.
    pub fn set(&self, at: UnixTime) {
        if let Some(t) = &self.0 {
            t.store(at, Ordering::SeqCst);
        }
    }

    /// Moves a manual clock forward; the system clock ignores it.
    pub fn advance(&self, secs: u64) {
        if let Some(t) = &self.0 {
            t.fetch_add(secs, Ordering::SeqCst);
        }
    }

    pub fn is_manual(&self) -> bool {
        self.0.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_is_shared_by_clones_and_moves_only_when_told() {
        let clock = Clock::manual(1_700_000_000);
        let other = clock.clone();
        assert_eq!(other.now(), 1_700_000_000);
        clock.advance(86_400);
        assert_eq!(other.now(), 1_700_086_400);
        other.set(5);
        assert_eq!(clock.now(), 5);
    }

    #[test]
    fn system_clock_follows_the_system_and_ignores_moves() {
        let clock = Clock::system();
        let before = now();
        clock.advance(1_000_000);
        let read = clock.now();
        assert!(read >= before && read <= now());
        assert!(!clock.is_manual());
    }
}
