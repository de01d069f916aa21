//! A grant's limits, as stored and as on the wire (`limits` in every grant JSON and in
//! `[plans.NAME]`): requests and tokens per minute, concurrent requests, a budget per
//! calendar period, and per-model overrides. Every field is optional: absent = no
//! limit. Validation names the offending field (`limits.budget.usd`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::calendar::Period;
use crate::money::Usd;

/// A budget: at most `usd` dollars and/or `tokens` tokens per `period`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    #[serde(default)]
    pub usd: Option<Usd>,
    #[serde(default)]
    pub tokens: Option<u64>,
    pub period: Period,
}

/// Limits that apply to one model on top of the grant's own (from a plan's
/// `[plans.NAME.models."MODEL"]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelLimits {
    #[serde(default)]
    pub rpm: Option<u32>,
    #[serde(default)]
    pub tpm: Option<u64>,
    #[serde(default)]
    pub budget: Option<Budget>,
}

/// A grant's limits. Absent fields mean "no limit".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default)]
    pub rpm: Option<u32>,
    #[serde(default)]
    pub tpm: Option<u64>,
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    #[serde(default)]
    pub budget: Option<Budget>,
    /// Per-model overrides; they add to (never replace) the grant-wide limits.
    /// `"models": null` reads as none, like an absent field.
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub models: BTreeMap<String, ModelLimits>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, ModelLimits>, D::Error> {
    Ok(Option::deserialize(d)?.unwrap_or_default())
}

/// Most per-model entries one `limits` may have.
pub const MAX_MODEL_LIMITS: usize = 256;

/// A named plan from the config file (`[plans.NAME]`): the limits a grant on it gets
/// (and may only tighten), and the output tokens reserved for a request that names no
/// `max_tokens`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    #[serde(default)]
    pub rpm: Option<u32>,
    #[serde(default)]
    pub tpm: Option<u64>,
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    #[serde(default)]
    pub budget: Option<Budget>,
    #[serde(default)]
    pub default_max_tokens: Option<u64>,
    #[serde(default)]
    pub models: BTreeMap<String, ModelLimits>,
    /// Callers on this plan must send their own OpenAI key (`X-OpenAI-Key`) with every
    /// request; the vault's key is never used for them.
    #[serde(default)]
    pub requires_own_key: bool,
    /// Whether callers may send their own OpenAI key (`X-OpenAI-Key`); `None` is yes.
    #[serde(default)]
    pub allow_own_key: Option<bool>,
    /// A grant on this plan whose person has stored no OpenAI key uses the operator's
    /// key (`keygate keys set-operator`, `PUT /admin/operator-key`), when one is set.
    /// The person's own stored key, and the caller's `X-OpenAI-Key`, still win.
    #[serde(default)]
    pub use_operator_key: bool,
}

/// What a plan says about the caller's own OpenAI key (`X-OpenAI-Key`), as apps are
/// told it (`GET /v1/key`, `GET /api/connect/plan`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OwnKey {
    Required,
    Allowed,
    Forbidden,
}

impl Plan {
    /// Whether a caller on this plan may send `X-OpenAI-Key` (the default: yes).
    pub fn allows_own_key(&self) -> bool {
        self.allow_own_key != Some(false)
    }

    /// The plan's own-key rule in one word (`requires_own_key` wins: config refuses a
    /// plan that both requires and forbids it).
    pub fn own_key(&self) -> OwnKey {
        if self.requires_own_key {
            OwnKey::Required
        } else if self.allows_own_key() {
            OwnKey::Allowed
        } else {
            OwnKey::Forbidden
        }
    }

    /// The limits a grant on this plan starts with (its ceiling).
    pub fn limits(&self) -> Limits {
        Limits {
            rpm: self.rpm,
            tpm: self.tpm,
            max_concurrency: self.max_concurrency,
            budget: self.budget.clone(),
            models: self.models.clone(),
        }
    }
}

/// An invalid limit: which field (`limits.rpm`, `limits.models.gpt-4o.budget.usd`) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct LimitError {
    pub field: String,
    pub message: String,
}

impl LimitError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl Budget {
    fn validate(&self, at: &str) -> Result<(), LimitError> {
        if self.usd.is_none() && self.tokens.is_none() {
            return Err(LimitError::new(
                at,
                "a budget needs `usd`, `tokens` or both",
            ));
        }
        // Also what a fraction of a nanodollar (`1e-12`) rounds to.
        if self.usd == Some(Usd::ZERO) {
            return Err(LimitError::new(
                format!("{at}.usd"),
                "must be more than $0 (revoke or disable the grant to stop it)",
            ));
        }
        if self.tokens == Some(0) {
            return Err(LimitError::new(
                format!("{at}.tokens"),
                "must be at least 1 (revoke or disable the grant to stop it)",
            ));
        }
        Ok(())
    }
}

impl ModelLimits {
    fn validate(&self, at: &str) -> Result<(), LimitError> {
        positive(self.rpm.map(u64::from), &format!("{at}.rpm"))?;
        positive(self.tpm, &format!("{at}.tpm"))?;
        if let Some(b) = &self.budget {
            b.validate(&format!("{at}.budget"))?;
        }
        Ok(())
    }
}

fn positive(v: Option<u64>, field: &str) -> Result<(), LimitError> {
    match v {
        Some(0) => Err(LimitError::new(field, "must be at least 1")),
        _ => Ok(()),
    }
}

impl Limits {
    pub fn is_unlimited(&self) -> bool {
        *self == Limits::default()
    }

    /// Checks every field; the error names the first bad one under `limits.`.
    pub fn validate(&self) -> Result<(), LimitError> {
        positive(self.rpm.map(u64::from), "limits.rpm")?;
        positive(self.tpm, "limits.tpm")?;
        positive(
            self.max_concurrency.map(u64::from),
            "limits.max_concurrency",
        )?;
        if let Some(b) = &self.budget {
            b.validate("limits.budget")?;
        }
        // As many as a grant's model allow-list: every request reads the grant record,
        // so an app cannot have it carry thousands of (tightening) entries.
        if self.models.len() > MAX_MODEL_LIMITS {
            return Err(LimitError::new(
                "limits.models",
                format!("at most {MAX_MODEL_LIMITS} models"),
            ));
        }
        for (model, m) in &self.models {
            if model.is_empty() || model.len() > 128 || !model.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(LimitError::new(
                    "limits.models",
                    "each key must be a model id of 1–128 printable characters",
                ));
            }
            m.validate(&format!("limits.models.{model}"))?;
        }
        Ok(())
    }

    /// The overrides for `model`, if any.
    pub fn for_model(&self, model: &str) -> Option<&ModelLimits> {
        self.models.get(model)
    }

    /// Is every limit `ceiling` sets also set here, and no larger? (A person may only
    /// tighten what a plan allows.) A budget must keep the ceiling's period.
    pub fn within(&self, ceiling: &Limits) -> Result<(), LimitError> {
        at_most(
            self.rpm.map(u64::from),
            ceiling.rpm.map(u64::from),
            "limits.rpm",
        )?;
        at_most(self.tpm, ceiling.tpm, "limits.tpm")?;
        at_most(
            self.max_concurrency.map(u64::from),
            ceiling.max_concurrency.map(u64::from),
            "limits.max_concurrency",
        )?;
        budget_within(
            self.budget.as_ref(),
            ceiling.budget.as_ref(),
            "limits.budget",
        )?;
        for (model, cap) in &ceiling.models {
            let at = format!("limits.models.{model}");
            let mine = self.models.get(model).cloned().unwrap_or_default();
            at_most(
                mine.rpm.map(u64::from),
                cap.rpm.map(u64::from),
                &format!("{at}.rpm"),
            )?;
            at_most(mine.tpm, cap.tpm, &format!("{at}.tpm"))?;
            budget_within(
                mine.budget.as_ref(),
                cap.budget.as_ref(),
                &format!("{at}.budget"),
            )?;
        }
        Ok(())
    }
}

fn at_most(mine: Option<u64>, cap: Option<u64>, field: &str) -> Result<(), LimitError> {
    match (mine, cap) {
        (_, None) => Ok(()),
        (None, Some(c)) => Err(LimitError::new(
            field,
            format!("the plan allows at most {c}; it cannot be removed"),
        )),
        (Some(m), Some(c)) if m > c => Err(LimitError::new(
            field,
            format!("the plan allows at most {c}"),
        )),
        _ => Ok(()),
    }
}

fn budget_within(mine: Option<&Budget>, cap: Option<&Budget>, at: &str) -> Result<(), LimitError> {
    let Some(cap) = cap else { return Ok(()) };
    let Some(mine) = mine else {
        return Err(LimitError::new(
            at,
            "the plan sets a budget; it cannot be removed",
        ));
    };
    if mine.period != cap.period {
        return Err(LimitError::new(
            format!("{at}.period"),
            format!("the plan's budget is per {}", cap.period.as_str()),
        ));
    }
    at_most(
        mine.usd.map(Usd::nanos),
        cap.usd.map(Usd::nanos),
        &format!("{at}.usd"),
    )
    .map_err(|e| {
        LimitError::new(
            e.field,
            format!("the plan allows at most {}", cap.usd.unwrap_or_default()),
        )
    })?;
    at_most(mine.tokens, cap.tokens, &format!("{at}.tokens"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits(v: serde_json::Value) -> Limits {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn wire_shape() {
        let l = limits(json!({"rpm": 60, "budget": {"usd": 5, "period": "month"}}));
        l.validate().unwrap();
        assert_eq!(
            serde_json::to_value(&l).unwrap(),
            json!({"rpm": 60, "tpm": null, "max_concurrency": null,
                   "budget": {"usd": 5.0, "tokens": null, "period": "month"}})
        );
        assert!(serde_json::from_value::<Limits>(json!({"rpn": 1})).is_err());
        assert!(
            serde_json::from_value::<Limits>(json!({"budget": {"usd": 1, "period": "year"}}))
                .is_err()
        );
        assert!(serde_json::from_value::<Limits>(json!({"rpm": -1})).is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let e = limits(json!({"rpm": 0})).validate().unwrap_err();
        assert_eq!(e.field, "limits.rpm");
        let e = limits(json!({"budget": {"period": "day"}}))
            .validate()
            .unwrap_err();
        assert_eq!(e.field, "limits.budget");
        for usd in [json!(0), json!(1e-12)] {
            let e = limits(json!({"budget": {"usd": usd, "period": "day"}}))
                .validate()
                .unwrap_err();
            assert_eq!(e.field, "limits.budget.usd");
        }
        let many: serde_json::Map<String, serde_json::Value> = (0..=MAX_MODEL_LIMITS)
            .map(|i| (format!("m{i}"), json!({"rpm": 1})))
            .collect();
        let e = limits(json!({ "models": many })).validate().unwrap_err();
        assert_eq!(e.field, "limits.models");
        let e = limits(json!({"models": {"gpt-4o": {"tpm": 0}}}))
            .validate()
            .unwrap_err();
        assert_eq!(e.field, "limits.models.gpt-4o.tpm");
    }

    #[test]
    fn within_a_plan() {
        let plan = limits(json!({"rpm": 60, "budget": {"usd": 5, "period": "month"}}));
        limits(json!({"rpm": 10, "budget": {"usd": 2, "period": "month"}}))
            .within(&plan)
            .unwrap();
        limits(json!({"rpm": 60, "tpm": 5, "budget": {"usd": 5, "period": "month"}}))
            .within(&plan)
            .unwrap();
        let e = limits(json!({"rpm": 61, "budget": {"usd": 5, "period": "month"}}))
            .within(&plan)
            .unwrap_err();
        assert_eq!(e.field, "limits.rpm");
        let e = limits(json!({"rpm": 60})).within(&plan).unwrap_err();
        assert_eq!(e.field, "limits.budget");
        let e = limits(json!({"rpm": 60, "budget": {"usd": 6, "period": "month"}}))
            .within(&plan)
            .unwrap_err();
        assert_eq!(e.field, "limits.budget.usd");
        let e = limits(json!({"rpm": 60, "budget": {"usd": 1, "period": "day"}}))
            .within(&plan)
            .unwrap_err();
        assert_eq!(e.field, "limits.budget.period");
        Limits::default().within(&Limits::default()).unwrap();
    }
}
