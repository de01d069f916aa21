//! Model prices in USD per million tokens: a built-in table of current OpenAI models
//! (dated, source in docs/CONFIG.md), overridden and extended by `[prices."MODEL"]`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::money::Usd;
use crate::usage::Usage;

/// One model's prices per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_mtok: Usd,
    /// Absent: cached input costs the same as input.
    #[serde(default)]
    pub cached_input_per_mtok: Option<Usd>,
    #[serde(default)]
    pub output_per_mtok: Usd,
}

impl Price {
    /// What `usage` costs at this price.
    pub fn cost(&self, usage: &Usage) -> Usd {
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let fresh = usage.prompt_tokens - cached;
        per_mtok(fresh, self.input_per_mtok)
            + per_mtok(
                cached,
                self.cached_input_per_mtok.unwrap_or(self.input_per_mtok),
            )
            + per_mtok(usage.completion_tokens, self.output_per_mtok)
    }
}

fn per_mtok(tokens: u64, price: Usd) -> Usd {
    let nanos = u128::from(tokens) * u128::from(price.nanos()) / 1_000_000;
    Usd::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// The prices keygate knows: built-in, then the config's entries on top.
#[derive(Clone, Debug, Default)]
pub struct PriceTable {
    prices: BTreeMap<String, Price>,
}

impl PriceTable {
    /// The built-in table (see [`BUILTIN_AS_OF`]).
    pub fn builtin() -> Self {
        let d = |x: f64| Usd::from_dollars(x).unwrap_or_default();
        let prices = BUILTIN
            .iter()
            .map(|&(model, input, cached, output)| {
                (
                    model.to_owned(),
                    Price {
                        input_per_mtok: d(input),
                        cached_input_per_mtok: cached.map(d),
                        output_per_mtok: d(output),
                    },
                )
            })
            .collect();
        Self { prices }
    }

    /// This table with `overrides` added (replacing built-in entries of the same name).
    pub fn with(mut self, overrides: BTreeMap<String, Price>) -> Self {
        self.prices.extend(overrides);
        self
    }

    /// The price of `model`: an exact entry, else the entry for its undated name
    /// (`gpt-4o-2024-08-06` → `gpt-4o`).
    pub fn get(&self, model: &str) -> Option<&Price> {
        self.prices
            .get(model)
            .or_else(|| undated(model).and_then(|m| self.prices.get(m)))
    }
}

/// `name-YYYY-MM-DD` → `name`.
fn undated(model: &str) -> Option<&str> {
    let (name, date) = model.len().checked_sub(11).map(|i| model.split_at(i))?;
    let date = date.strip_prefix('-')?;
    let ok = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    ok.then_some(name)
}

/// When the built-in table was taken from OpenAI's pricing page.
pub const BUILTIN_AS_OF: &str = "2026-11-30";

/// (model, input, cached input, output) in USD per million tokens, from
/// https://openai.com/api/pricing (standard tier).
const BUILTIN: &[(&str, f64, Option<f64>, f64)] = &[
    ("gpt-4o", 2.50, Some(1.25), 10.00),
    ("gpt-4o-mini", 0.15, Some(0.075), 0.60),
    ("text-embedding-3-small", 0.02, None, 0.0),
    ("text-embedding-3-large", 0.13, None, 0.0),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_exact() {
        let t = PriceTable::builtin();
        let p = t.get("gpt-4o-mini-2024-07-18").copied().unwrap();
        let u = Usage {
            prompt_tokens: 1_000_000,
            cached_tokens: 0,
            completion_tokens: 1_000_000,
        };
        assert_eq!(p.cost(&u), Usd::from_dollars(0.75).unwrap());
        let u = Usage {
            prompt_tokens: 10,
            cached_tokens: 10,
            completion_tokens: 0,
        };
        assert_eq!(p.cost(&u).nanos(), 750);
        assert!(t.get("gpt-4o-mini-2024-07").is_none());
        assert!(t.get("nope").is_none());
    }
}
