use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
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

/// Nanoseconds in a second.
const NANOS: u64 = 1_000_000_000;

/// The clock the server reads "now" from. Production uses the system clock; tests use
/// a manual one so expiry, day and month boundaries can be crossed without sleeping, and
/// test environments that run in real time (keygate-testenv) a system clock with an
/// offset, moved forward the same way.
/// Cheap to clone: clones of a manual or offset clock share one time.
#[derive(Clone, Debug, Default)]
pub struct Clock(Kind);

#[derive(Clone, Debug, Default)]
enum Kind {
    #[default]
    System,
    /// Stands still at this time.
    Manual(Arc<AtomicU64>),
    /// The system clock plus this many seconds (negative after `set` to the past).
    SystemOffset(Arc<AtomicI64>),
}

impl Clock {
    pub fn system() -> Self {
        Self(Kind::System)
    }

    /// A clock that stands still at `at` until moved with [`Clock::set`] or
    /// [`Clock::advance`].
    pub fn manual(at: UnixTime) -> Self {
        Self(Kind::Manual(Arc::new(AtomicU64::new(at))))
    }

    /// The system clock plus an offset, starting at 0: it follows real time, and
    /// [`Clock::advance`] and [`Clock::set`] move it. For test environments where real
    /// requests take real time but a test must cross a time limit without waiting.
    pub fn system_offset() -> Self {
        Self(Kind::SystemOffset(Arc::new(AtomicI64::new(0))))
    }

    /// "Now" in milliseconds, for rate windows finer than a second. A manual clock
    /// reads its second exactly (`now() * 1000`).
    pub fn now_ms(&self) -> u64 {
        let system_ms = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0)
        };
        match &self.0 {
            Kind::System => system_ms(),
            Kind::Manual(t) => t.load(Ordering::SeqCst).saturating_mul(1000),
            Kind::SystemOffset(offset) => {
                let moved =
                    i128::from(system_ms()) + i128::from(offset.load(Ordering::SeqCst)) * 1000;
                u64::try_from(moved.max(0)).unwrap_or(u64::MAX)
            }
        }
    }

    /// "Now" in nanoseconds (audit entries are ordered by it). A manual clock reads
    /// its second exactly (`now() * 10^9`).
    pub fn now_nanos(&self) -> u64 {
        let system_ns = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                .unwrap_or(0)
        };
        match &self.0 {
            Kind::System => system_ns(),
            Kind::Manual(t) => t.load(Ordering::SeqCst).saturating_mul(NANOS),
            Kind::SystemOffset(offset) => {
                let moved = i128::from(system_ns())
                    + i128::from(offset.load(Ordering::SeqCst)) * i128::from(NANOS);
                u64::try_from(moved.max(0)).unwrap_or(u64::MAX)
            }
        }
    }

    pub fn now(&self) -> UnixTime {
        match &self.0 {
            Kind::System => now(),
            Kind::Manual(t) => t.load(Ordering::SeqCst),
            Kind::SystemOffset(offset) => offset_now(now(), offset.load(Ordering::SeqCst)),
        }
    }

    /// Moves a manual clock to `at`; an offset clock reads `at` now and goes on with
    /// real time from there. The system clock ignores it.
    pub fn set(&self, at: UnixTime) {
        match &self.0 {
            Kind::System => {}
            Kind::Manual(t) => t.store(at, Ordering::SeqCst),
            Kind::SystemOffset(offset) => {
                let diff = i128::from(at) - i128::from(now());
                let diff =
                    i64::try_from(diff).unwrap_or(if diff < 0 { i64::MIN } else { i64::MAX });
                offset.store(diff, Ordering::SeqCst);
            }
        }
    }

    /// Moves a manual or offset clock forward by `secs`; the system clock ignores it.
    pub fn advance(&self, secs: u64) {
        match &self.0 {
            Kind::System => {}
            Kind::Manual(t) => {
                t.fetch_add(secs, Ordering::SeqCst);
            }
            Kind::SystemOffset(offset) => {
                let secs = i64::try_from(secs).unwrap_or(i64::MAX);
                let _ = offset.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |o| {
                    Some(o.saturating_add(secs))
                });
            }
        }
    }

    /// Takes an offset clock back to the system time (offset 0); other clocks ignore it.
    pub fn reset_offset(&self) {
        if let Kind::SystemOffset(offset) = &self.0 {
            offset.store(0, Ordering::SeqCst);
        }
    }

    /// Whether this clock stands still between moves (a manual one).
    pub fn is_manual(&self) -> bool {
        matches!(self.0, Kind::Manual(_))
    }
}

/// `system` moved by `offset` seconds, kept within [`UnixTime`]'s range.
fn offset_now(system: UnixTime, offset: i64) -> UnixTime {
    let moved = i128::from(system) + i128::from(offset);
    UnixTime::try_from(moved.max(0)).unwrap_or(UnixTime::MAX)
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
    fn nanos_agree_with_seconds() {
        let clock = Clock::manual(1_700_000_000);
        assert_eq!(clock.now_nanos(), 1_700_000_000 * NANOS);
        for clock in [Clock::system(), Clock::system_offset()] {
            let before = now();
            let read = clock.now_nanos() / NANOS;
            assert!(read >= before && read <= now(), "{read} vs {before}");
        }
        let moved = Clock::system_offset();
        moved.advance(100);
        assert!(moved.now_nanos() / NANOS >= now() + 99);
    }

    #[test]
    fn system_clock_follows_the_system_and_ignores_moves() {
        let clock = Clock::system();
        let before = now();
        clock.advance(1_000_000);
        clock.reset_offset();
        let read = clock.now();
        assert!(read >= before && read <= now());
        assert!(!clock.is_manual());
    }

    #[test]
    fn offset_clock_follows_the_system_and_moves_forward_when_told() {
        let clock = Clock::system_offset();
        let other = clock.clone();
        assert!(!clock.is_manual());

        // Unmoved, it reads the system time.
        let before = now();
        let read = clock.now();
        assert!(read >= before && read <= now());

        // Advanced, it reads the system time plus everything advanced, on every clone.
        clock.advance(301);
        other.advance(99);
        let before = now();
        let read = other.now();
        assert!(
            read >= before + 400 && read <= now() + 400,
            "{read} vs {before}"
        );
        assert!(clock.now() >= read);

        // Set, it reads that time now and keeps following real time (also backwards).
        clock.set(1_700_000_000);
        let read = other.now();
        assert!((1_700_000_000..=1_700_000_002).contains(&read), "{read}");
        clock.set(before + 10);
        assert!(clock.now() >= before + 10 && clock.now() <= now() + 10);

        // Reset, it reads the system time again.
        other.reset_offset();
        let before = now();
        let read = clock.now();
        assert!(read >= before && read <= now(), "{read} vs {before}");
    }

    #[test]
    fn offset_arithmetic_stays_in_range() {
        assert_eq!(offset_now(1_000, 301), 1_301);
        assert_eq!(offset_now(1_000, -400), 600);
        assert_eq!(offset_now(1_000, i64::MIN), 0);
        assert_eq!(offset_now(UnixTime::MAX, i64::MAX), UnixTime::MAX);
        // Advancing saturates instead of wrapping round to the past.
        let clock = Clock::system_offset();
        let before = now();
        clock.advance(u64::MAX);
        clock.advance(u64::MAX);
        assert!(clock.now() >= before + i64::MAX.unsigned_abs());
    }
}
