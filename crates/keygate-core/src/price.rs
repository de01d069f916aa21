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

    /// The names the table prices, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.prices.keys().map(String::as_str)
    }

    /// The table's name for `model`: itself, or its undated name, when priced.
    pub fn priced_name<'a>(&'a self, model: &str) -> Option<&'a str> {
        self.prices
            .get_key_value(model)
            .or_else(|| undated(model).and_then(|m| self.prices.get_key_value(m)))
            .map(|(k, _)| k.as_str())
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

/// (model, input, cached input, output) in USD per million tokens, standard tier,
/// compiled from OpenAI's published prices (<https://openai.com/api/pricing>; the
/// per-model pages at <https://platform.openai.com/docs/pricing>). They could not be
/// re-checked against the live page when written: operators verify them and override
/// with `[prices."MODEL"]` (docs/CONFIG.md).
///
/// Text and embedding models only: image, audio, realtime, transcription and speech
/// models bill by other units (images, seconds, audio tokens) that keygate does not
/// meter, so they are left out on purpose and a grant with a USD budget is refused
/// them (`model_not_priced`); `[prices."MODEL"]` in the config can add any model.
/// `None` as the cached price: OpenAI offers no cached-input discount for the model.
/// Dated snapshots fall back to their undated name (see [`PriceTable::get`]); a
/// snapshot priced differently from its alias has its own row. Fine-tuned models
/// (`ft:…`) are priced per job and have no row.
const BUILTIN: &[(&str, f64, Option<f64>, f64)] = &[
    // GPT-5 family.
    ("gpt-5", 1.25, Some(0.125), 10.00),
    ("gpt-5-mini", 0.25, Some(0.025), 2.00),
    ("gpt-5-nano", 0.05, Some(0.005), 0.40),
    ("gpt-5-chat-latest", 1.25, Some(0.125), 10.00),
    ("gpt-5-codex", 1.25, Some(0.125), 10.00),
    ("gpt-5-pro", 15.00, None, 120.00),
    ("gpt-5.1", 1.25, Some(0.125), 10.00),
    ("gpt-5.1-chat-latest", 1.25, Some(0.125), 10.00),
    ("gpt-5.1-codex", 1.25, Some(0.125), 10.00),
    // GPT-4.1 family.
    ("gpt-4.1", 2.00, Some(0.50), 8.00),
    ("gpt-4.1-mini", 0.40, Some(0.10), 1.60),
    ("gpt-4.1-nano", 0.10, Some(0.025), 0.40),
    ("gpt-4.5-preview", 75.00, Some(37.50), 150.00),
    // GPT-4o family (the first gpt-4o snapshot kept its launch price).
    ("gpt-4o", 2.50, Some(1.25), 10.00),
    ("gpt-4o-2024-05-13", 5.00, None, 15.00),
    ("gpt-4o-mini", 0.15, Some(0.075), 0.60),
    ("chatgpt-4o-latest", 5.00, None, 15.00),
    ("gpt-4o-search-preview", 2.50, None, 10.00),
    ("gpt-4o-mini-search-preview", 0.15, None, 0.60),
    ("computer-use-preview", 3.00, None, 12.00),
    // o-series reasoning models (reasoning tokens are billed as output).
    ("o1", 15.00, Some(7.50), 60.00),
    ("o1-preview", 15.00, Some(7.50), 60.00),
    ("o1-mini", 1.10, Some(0.55), 4.40),
    ("o1-pro", 150.00, None, 600.00),
    ("o3", 2.00, Some(0.50), 8.00),
    ("o3-pro", 20.00, None, 80.00),
    ("o3-mini", 1.10, Some(0.55), 4.40),
    ("o3-deep-research", 10.00, Some(2.50), 40.00),
    ("o4-mini", 1.10, Some(0.275), 4.40),
    ("o4-mini-deep-research", 2.00, Some(0.50), 8.00),
    ("codex-mini-latest", 1.50, Some(0.375), 6.00),
    // Older GPT-4 and GPT-3.5 (snapshots named without a date have their own rows).
    ("gpt-4-turbo", 10.00, None, 30.00),
    ("gpt-4-turbo-preview", 10.00, None, 30.00),
    ("gpt-4-0125-preview", 10.00, None, 30.00),
    ("gpt-4-1106-preview", 10.00, None, 30.00),
    ("gpt-4", 30.00, None, 60.00),
    ("gpt-4-0613", 30.00, None, 60.00),
    ("gpt-4-0314", 30.00, None, 60.00),
    ("gpt-4-32k", 60.00, None, 120.00),
    ("gpt-3.5-turbo", 0.50, None, 1.50),
    ("gpt-3.5-turbo-0125", 0.50, None, 1.50),
    ("gpt-3.5-turbo-1106", 1.00, None, 2.00),
    ("gpt-3.5-turbo-instruct", 1.50, None, 2.00),
    ("gpt-3.5-turbo-16k", 3.00, None, 4.00),
    ("davinci-002", 2.00, None, 2.00),
    ("babbage-002", 0.40, None, 0.40),
    // Embeddings (input only).
    ("text-embedding-3-small", 0.02, None, 0.0),
    ("text-embedding-3-large", 0.13, None, 0.0),
    ("text-embedding-ada-002", 0.10, None, 0.0),
    // Moderation is free: listed so a USD-budget grant may call it.
    ("omni-moderation-latest", 0.0, None, 0.0),
    ("text-moderation-latest", 0.0, None, 0.0),
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

    /// Review: an upstream's fake or huge `usage` must not overflow (or panic) in the
    /// cost math: it saturates at the largest amount.
    #[test]
    fn absurd_usage_saturates() {
        let p = Price {
            input_per_mtok: Usd::from_nanos(u64::MAX),
            cached_input_per_mtok: None,
            output_per_mtok: Usd::from_nanos(u64::MAX),
        };
        let u = Usage {
            prompt_tokens: u64::MAX,
            cached_tokens: u64::MAX,
            completion_tokens: u64::MAX,
        };
        assert_eq!(p.cost(&u), Usd::from_nanos(u64::MAX));
        assert_eq!(u.total(), u64::MAX);
    }

    /// (input, cached, output) per million tokens of `model`, in dollars.
    fn per_m(t: &PriceTable, model: &str) -> (f64, f64, f64) {
        let p = t
            .get(model)
            .copied()
            .unwrap_or_else(|| panic!("{model} not priced"));
        let m = 1_000_000;
        let cost = |u: Usage| p.cost(&u).nanos() as f64 / 1e9;
        (
            cost(Usage {
                prompt_tokens: m,
                ..Usage::default()
            }),
            cost(Usage {
                prompt_tokens: m,
                cached_tokens: m,
                ..Usage::default()
            }),
            cost(Usage {
                completion_tokens: m,
                ..Usage::default()
            }),
        )
    }

    #[test]
    fn every_family_is_priced() {
        let t = PriceTable::builtin();
        let cases: &[(&str, (f64, f64, f64))] = &[
            ("gpt-5-2025-08-07", (1.25, 0.125, 10.0)),
            ("gpt-5-mini-2025-08-07", (0.25, 0.025, 2.0)),
            ("gpt-5-nano", (0.05, 0.005, 0.4)),
            ("gpt-4.1-2025-04-14", (2.0, 0.5, 8.0)),
            ("gpt-4.1-mini", (0.4, 0.1, 1.6)),
            ("gpt-4.1-nano-2025-04-14", (0.1, 0.025, 0.4)),
            ("gpt-4o-2024-08-06", (2.5, 1.25, 10.0)),
            ("gpt-4o-2024-05-13", (5.0, 5.0, 15.0)),
            ("gpt-4o-mini-2024-07-18", (0.15, 0.075, 0.6)),
            ("o1-2024-12-17", (15.0, 7.5, 60.0)),
            ("o1-mini", (1.1, 0.55, 4.4)),
            ("o3-2025-04-16", (2.0, 0.5, 8.0)),
            ("o3-mini-2025-01-31", (1.1, 0.55, 4.4)),
            ("o4-mini-2025-04-16", (1.1, 0.275, 4.4)),
            ("gpt-4-turbo-2024-04-09", (10.0, 10.0, 30.0)),
            ("gpt-4", (30.0, 30.0, 60.0)),
            ("gpt-4-0613", (30.0, 30.0, 60.0)),
            ("gpt-3.5-turbo-0125", (0.5, 0.5, 1.5)),
            ("text-embedding-3-small", (0.02, 0.02, 0.0)),
            ("text-embedding-3-large", (0.13, 0.13, 0.0)),
            ("text-embedding-ada-002", (0.1, 0.1, 0.0)),
            ("omni-moderation-latest", (0.0, 0.0, 0.0)),
        ];
        for &(model, want) in cases {
            assert_eq!(per_m(&t, model), want, "{model}");
        }
    }

    #[test]
    fn media_and_fine_tuned_models_are_not_priced() {
        let t = PriceTable::builtin();
        for m in [
            "gpt-image-1",
            "dall-e-3",
            "gpt-4o-realtime-preview",
            "gpt-4o-audio-preview",
            "gpt-4o-transcribe",
            "whisper-1",
            "tts-1",
            "ft:gpt-4o-mini-2024-07-18:acme::abc",
        ] {
            assert!(t.get(m).is_none(), "{m}");
        }
    }

    #[test]
    fn config_overrides_and_extends() {
        let cheap = Price {
            input_per_mtok: Usd::from_dollars(1.0).unwrap(),
            cached_input_per_mtok: None,
            output_per_mtok: Usd::from_dollars(2.0).unwrap(),
        };
        let t = PriceTable::builtin().with(BTreeMap::from([
            ("gpt-4o".to_owned(), cheap),
            ("my-model".to_owned(), cheap),
        ]));
        assert_eq!(t.get("gpt-4o-2024-08-06"), Some(&cheap));
        assert_eq!(t.get("my-model"), Some(&cheap));
        assert_eq!(per_m(&t, "gpt-4o-mini").0, 0.15);
    }

    #[test]
    fn builtin_rows_are_unique_and_sane() {
        let mut names: Vec<&str> = BUILTIN.iter().map(|r| r.0).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), BUILTIN.len());
        for &(m, input, cached, output) in BUILTIN {
            assert!(cached.is_none_or(|c| c <= input), "{m}");
            assert!(
                Usd::from_dollars(input).is_some() && Usd::from_dollars(output).is_some(),
                "{m}"
            );
        }
    }
}
