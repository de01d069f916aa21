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
    // Day 0 is refused here, not left to the round trip below: `days_from_civil` would
    // underflow on it (the 0th of March is day -1 of the year's March-based count).
    if parts.next().is_some()
        || !(1970..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&d)
    {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // Reject 2026-02-31 and the like: the day must map back to itself.
    (civil(days) == (y, m, d)).then(|| u32::try_from(days).ok())?
}

/// `2026-11-30T12:00:00Z`: how `expires_at` is written on the wire.
pub fn to_rfc3339(t: UnixTime) -> String {
    let (y, m, d) = civil(t / DAY);
    let s = t % DAY;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// `2026-11-30T12:00:00.123456Z`: a time in nanoseconds, to the microsecond (audit
/// entries' `at`).
pub fn to_rfc3339_micros(ns: u64) -> String {
    let secs = to_rfc3339(ns / 1_000_000_000);
    let micros = ns % 1_000_000_000 / 1_000;
    format!("{}.{micros:06}Z", secs.trim_end_matches('Z'))
}

/// Reads an RFC 3339 date-time (`Z` or a `±hh:mm` offset, optional fraction, which is
/// dropped) as Unix seconds; `None` for anything else or a time before 1970.
pub fn parse_rfc3339(s: &str) -> Option<UnixTime> {
    let s = s.trim();
    let (date, rest) = s.split_once(['T', 't', ' '])?;
    let day = u64::from(parse_day(date)?);
    let (time, offset_secs): (&str, i64) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, 0)
    } else {
        let i = rest.rfind(['+', '-'])?;
        let (t, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        // Exactly `hh:mm`: no sign, no third digit (`+-1:00`, `+001:00` are not offsets).
        let (oh, om) = off.get(1..)?.split_once(':')?;
        let (oh, om) = (two_digits(oh)?, two_digits(om)?);
        if oh > 23 || om > 59 {
            return None;
        }
        (t, sign * i64::try_from(oh * 3600 + om * 60).ok()?)
    };
    let time = time.split_once('.').map_or(time, |(t, frac)| {
        if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
            ""
        } else {
            t
        }
    });
    let mut hms = time.split(':');
    let h: u64 = two_digits(hms.next()?)?;
    let m: u64 = two_digits(hms.next()?)?;
    let sec: u64 = two_digits(hms.next()?)?;
    if hms.next().is_some() || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let local = i64::try_from(day * DAY + h * 3600 + m * 60 + sec.min(59)).ok()?;
    u64::try_from(local - offset_secs).ok()
}

fn two_digits(s: &str) -> Option<u64> {
    (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
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

    #[test]
    fn rfc3339() {
        assert_eq!(to_rfc3339(MON_2026_11_30 + 3661), "2026-11-30T01:01:01Z");
        let ns = (MON_2026_11_30 + 3661) * 1_000_000_000 + 123_456_789;
        assert_eq!(to_rfc3339_micros(ns), "2026-11-30T01:01:01.123456Z");
        assert_eq!(to_rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            parse_rfc3339(&to_rfc3339_micros(ns)),
            Some(MON_2026_11_30 + 3661)
        );
        assert_eq!(
            parse_rfc3339("2026-11-30T01:01:01Z"),
            Some(MON_2026_11_30 + 3661)
        );
        assert_eq!(
            parse_rfc3339("2026-11-30T01:01:01.123Z"),
            Some(MON_2026_11_30 + 3661)
        );
        assert_eq!(
            parse_rfc3339("2026-11-30T02:01:01+01:00"),
            Some(MON_2026_11_30 + 3661)
        );
        assert_eq!(
            parse_rfc3339("2026-11-29T23:01:01-02:00"),
            Some(MON_2026_11_30 + 3661)
        );
        for bad in [
            "2026-11-30",
            "2026-11-30T1:01:01Z",
            "2026-13-01T00:00:00Z",
            "yesterday",
            "2026-11-30T24:00:00Z",
            "2026-11-30T00:00:00",
            "1969-12-31T23:59:59Z",
            // Day 0 (of March, the month `days_from_civil` counts from, it underflowed).
            "2027-03-00T00:00:00Z",
            "2027-01-00T00:00:00Z",
            "2027-01-32T00:00:00Z",
            // Offsets are exactly `±hh:mm`.
            "2026-11-30T00:00:00+-1:00",
            "2026-11-30T00:00:00+001:00",
            "2026-11-30T00:00:00+01:-5",
            "2026-11-30T00:00:00+1:00",
            "2026-11-30T00:00:00+24:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_numeric_date_parses_or_is_refused(y in 0u64..20_000, m in 0u64..20, d in 0u64..40) {
            let text = format!("{y:04}-{m:02}-{d:02}");
            if let Some(day) = parse_day(&text) {
                prop_assert_eq!(day_string(day), text);
            }
        }

        #[test]
        fn rfc3339_round_trips(t in 0u64..250_000_000_000) {
            prop_assert_eq!(parse_rfc3339(&to_rfc3339(t)), Some(t));
        }

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
