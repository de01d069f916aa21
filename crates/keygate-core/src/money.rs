//! Money in integer nanodollars: exact sums, no float drift in budgets. A price of
//! $0.15 per million tokens is 150 nanodollars per token, so every OpenAI price is exact.

use std::fmt;
use std::ops::{Add, AddAssign};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An amount of US dollars, stored as nanodollars. On the wire: a JSON number of
/// dollars (`5`, `0.25`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd(u64);

const NANOS_PER_DOLLAR: u64 = 1_000_000_000;
/// Largest amount accepted from outside: a billion dollars.
pub const MAX_DOLLARS: f64 = 1e9;

impl Usd {
    pub const ZERO: Usd = Usd(0);

    pub const fn from_nanos(n: u64) -> Self {
        Self(n)
    }

    pub const fn nanos(self) -> u64 {
        self.0
    }

    /// Dollars as written by a person or a config file: finite, ≥ 0 and ≤
    /// [`MAX_DOLLARS`], rounded to the nearest nanodollar.
    pub fn from_dollars(d: f64) -> Option<Self> {
        if !d.is_finite() || !(0.0..=MAX_DOLLARS).contains(&d) {
            return None;
        }
        Some(Self((d * NANOS_PER_DOLLAR as f64).round() as u64))
    }

    pub fn dollars(self) -> f64 {
        self.0 as f64 / NANOS_PER_DOLLAR as f64
    }

    pub fn saturating_sub(self, other: Usd) -> Usd {
        Usd(self.0.saturating_sub(other.0))
    }

    pub fn saturating_add(self, other: Usd) -> Usd {
        Usd(self.0.saturating_add(other.0))
    }
}

impl Add for Usd {
    type Output = Usd;
    fn add(self, rhs: Usd) -> Usd {
        self.saturating_add(rhs)
    }
}

impl Usd {
    /// The exact amount as a decimal number of dollars, trailing zeros dropped
    /// (`0.0000126`, `5`): never rounded, never in exponent form (`1.26e-5`, which a
    /// spreadsheet may read as text).
    pub fn exact(self) -> String {
        let (whole, frac) = (self.0 / NANOS_PER_DOLLAR, self.0 % NANOS_PER_DOLLAR);
        if frac == 0 {
            return whole.to_string();
        }
        let frac = format!("{frac:09}");
        format!("{whole}.{}", frac.trim_end_matches('0'))
    }
}

impl AddAssign for Usd {
    fn add_assign(&mut self, rhs: Usd) {
        *self = self.saturating_add(rhs);
    }
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${:.2}", self.dollars())
    }
}

impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.dollars())
    }
}

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        Usd::from_dollars(v).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "must be a number of dollars from 0 to {MAX_DOLLARS}"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn exact_decimals_drop_trailing_zeros_and_never_round() {
        use super::Usd;
        assert_eq!(Usd::from_nanos(0).exact(), "0");
        assert_eq!(Usd::from_nanos(12_600).exact(), "0.0000126");
        assert_eq!(Usd::from_nanos(5_000_000_000).exact(), "5");
        assert_eq!(Usd::from_nanos(1_500_000_001).exact(), "1.500000001");
    }

    use super::*;

    #[test]
    fn dollars_round_trip() {
        assert_eq!(Usd::from_dollars(5.0).map(Usd::nanos), Some(5_000_000_000));
        assert_eq!(Usd::from_dollars(0.15e-6).map(Usd::nanos), Some(150));
        assert_eq!(Usd::from_dollars(-1.0), None);
        assert_eq!(Usd::from_dollars(f64::NAN), None);
        assert_eq!(Usd::from_dollars(2e9), None);
        let v: Usd = serde_json::from_str("3.2").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "3.2");
        assert!(serde_json::from_str::<Usd>("\"3\"").is_err());
    }
}
