//! UTC calendar arithmetic for budget periods and per-day usage rows: days, weeks
//! (starting Monday 00:00 UTC) and months, from Unix seconds. Howard Hinnant's
//! civil-from-days algorithm; no time zone other than UTC exists here.

use serde::{Deserialize, Serialize};

use crate::time::UnixTime;

const DAY: u64 = 86_400;

/// A budget's period; each resets on the calendar in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    /// Monday 00:00 UTC to the next Monday.
    Week,
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }

    /// The start of the period that contains `t`.
    pub fn start(self, t: UnixTime) -> UnixTime {
        match self {
            Period::Day => day_start(t),
            Period::Week => {
                let days = t / DAY;
                // 1970-01-01 was a Thursday: Monday-based weekday = (days + 3) % 7.
                days.saturating_sub((days + 3) % 7).saturating_mul(DAY)
            }
            Period::Month => {
                let (y, m, _) = civil(t / DAY);
                days_from_civil(y, m, 1) * DAY
            }
        }
    }

    /// The start of the next period: when a budget in this period resets.
    pub fn next_start(self, t: UnixTime) -> UnixTime {
        match self {
            Period::Day => day_start(t) + DAY,
            Period::Week => self.start(t) + 7 * DAY,
            Period::Month => {
                let (y, m, _) = civil(t / DAY);
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                days_from_civil(y, m, 1) * DAY
            }
        }
    }
}

pub fn day_start(t: UnixTime) -> UnixTime {
    t - t % DAY
}

/// Days since the epoch (the key of per-day usage rows).
pub fn day_number(t: UnixTime) -> u32 {
    u32::try_from(t / DAY).unwrap_or(u32::MAX)
}

/// `YYYY-MM-DD` of a day number.
pub fn day_string(day: u32) -> String {
    let (y, m, d) = civil(u64::from(day));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The day number of `YYYY-MM-DD`, if it is a real date.
pub fn parse_day(s: &str) -> Option<u32> {
    let mut parts = s.split('-');
    let y: u64 = parts.next()?.parse().ok()?;
    let m: u64 = parts.next()?.parse().ok()?;
    let d: u64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1970..=9999).contains(&y) || !(1..=12).contains(&m) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // Reject 2026-02-31 and the like: the day must map back to itself.
    (civil(days) == (y, m, d)).then(|| u32::try_from(days).ok())?
}

/// (year, month 1–12, day 1–31) of a day number.
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // 2026-11-30 is a Monday.
    const MON_2026_11_30: u64 = 1_795_996_800;

    #[test]
    fn known_dates() {
        assert_eq!(day_string(day_number(MON_2026_11_30)), "2026-11-30");
        assert_eq!(parse_day("2026-11-30"), Some(day_number(MON_2026_11_30)));
        assert_eq!(parse_day("2026-02-29"), None);
        assert_eq!(
            parse_day("2028-02-29").map(day_string).as_deref(),
            Some("2028-02-29")
        );
        let noon_wed = MON_2026_11_30 + 2 * DAY + 12 * 3600;
        assert_eq!(Period::Week.start(noon_wed), MON_2026_11_30);
        assert_eq!(Period::Week.next_start(noon_wed), MON_2026_11_30 + 7 * DAY);
        assert_eq!(Period::Week.start(MON_2026_11_30), MON_2026_11_30);
        assert_eq!(
            Period::Week.start(MON_2026_11_30 - 1),
            MON_2026_11_30 - 7 * DAY
        );
        assert_eq!(
            day_string(day_number(Period::Month.start(noon_wed))),
            "2026-12-01"
        );
        assert_eq!(
            day_string(day_number(Period::Month.next_start(noon_wed))),
            "2027-01-01"
        );
        assert_eq!(
            day_string(day_number(Period::Month.start(MON_2026_11_30))),
            "2026-11-01"
        );
    }

    proptest! {
        #[test]
        fn periods_contain_their_instant(t in 1_000_000u64..8_000_000_000) {
            for p in [Period::Day, Period::Week, Period::Month] {
                let s = p.start(t);
                let n = p.next_start(t);
                prop_assert!(s <= t && t < n);
                prop_assert_eq!(p.start(n), n);
                prop_assert_eq!(p.start(n - 1), s);
            }
        }

        #[test]
        fn days_round_trip(day in 0u32..2_900_000) {
            prop_assert_eq!(parse_day(&day_string(day)), Some(day));
        }
    }
}
