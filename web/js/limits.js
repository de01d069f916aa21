// A grant's limits in plain words, and the small arithmetic the pages do on them: the one place
// the consent page (connect.js) and the dashboard (dashboard.js, grant-detail.js) take their
// wording from ("up to $5 a month", "60 requests a minute", "gpt-4o-mini only", "expires in
// 30 days"). The limits object is keygate's wire shape (docs/API.md): {rpm, tpm,
// max_concurrency, budget: {usd, tokens, period}, models: {MODEL: {rpm, tpm, budget}}}, every
// field optional or null. No DOM here: the browser tests import it in Node too.

import { scope, sortScopes } from "./scopes.js";

/** Budget periods: the calendar resets at 00:00 UTC (weeks on Monday). */
export const PERIODS = {
  day: { per: "a day", current: "today", noun: "day" },
  week: { per: "a week", current: "this week", noun: "week" },
  month: { per: "a month", current: "this month", noun: "month" },
};

const numberFmt = new Intl.NumberFormat("en-US");

/** 100000 → "100,000". */
export function count(n) {
  return numberFmt.format(Number(n) || 0);
}

/**
 * Dollars as people read them: "$5", "$5.50", "$0.25", and small amounts with two significant
 * digits ("$0.0021") so a few cheap requests don't show as "$0.00". `floor`: round down to the
 * cent (what is left of a budget never shows more than there is: $4.9979 → "$4.99").
 */
export function money(usd, { floor = false } = {}) {
  let v = Number(usd) || 0;
  if (floor && Math.abs(v) >= 0.01) v = Math.floor(v * 100 + 1e-9) / 100;
  if (v === 0) return "$0";
  const abs = Math.abs(v);
  let text;
  if (abs >= 1000) text = numberFmt.format(Math.round(abs));
  else if (abs >= 0.01) text = Number.isInteger(abs) ? String(abs) : abs.toFixed(2);
  else text = abs.toPrecision(2).replace(/0+$/, "");
  return `${v < 0 ? "-" : ""}$${text}`;
}

function plural(n, one, many) {
  return `${count(n)} ${n === 1 ? one : many}`;
}

function has(v) {
  return v !== null && v !== undefined && v !== "";
}

/** "up to $5 a month", "up to 100,000 tokens a day", "up to $5 and 100,000 tokens a week"; null without a budget. */
export function budgetWords(budget) {
  if (!budget || (!has(budget.usd) && !has(budget.tokens))) return null;
  const parts = [];
  if (has(budget.usd)) parts.push(money(budget.usd));
  if (has(budget.tokens)) parts.push(plural(budget.tokens, "token", "tokens"));
  const per = PERIODS[budget.period]?.per || `a ${budget.period}`;
  return `up to ${parts.join(" and ")} ${per}`;
}

/** The rate limits' phrases: "60 requests a minute", "10,000 tokens a minute", "3 requests at a time". */
function ratePhrases(l) {
  const out = [];
  if (has(l?.rpm)) out.push(`${plural(l.rpm, "request", "requests")} a minute`);
  if (has(l?.tpm)) out.push(`${plural(l.tpm, "token", "tokens")} a minute`);
  if (has(l?.max_concurrency)) out.push(`${plural(l.max_concurrency, "request", "requests")} at a time`);
  return out;
}

/**
 * Every limit as a phrase, most important first: the budget, rates, concurrency, then each
 * model's own ("gpt-4o: up to $1 a day, 10 requests a minute"). Empty when unlimited.
 */
export function limitPhrases(limits) {
  if (!limits) return [];
  const out = [];
  const budget = budgetWords(limits.budget);
  if (budget) out.push(budget);
  out.push(...ratePhrases(limits));
  for (const [model, m] of Object.entries(limits.models || {})) {
    const own = [budgetWords(m?.budget), ...ratePhrases({ rpm: m?.rpm, tpm: m?.tpm })].filter(Boolean);
    if (own.length) out.push(`${model}: ${listWords(own)}`);
  }
  return out;
}

/** A list in words: "a", "a and b", "a, b and c". */
export function listWords(items) {
  if (items.length <= 1) return items.join("");
  return `${items.slice(0, -1).join(", ")} and ${items[items.length - 1]}`;
}

/** "gpt-4o-mini only", "gpt-4o-mini and gpt-4o only"; null for every model. */
export function modelsWords(models) {
  if (!Array.isArray(models) || !models.length) return null;
  return `${listWords(models)} only`;
}

/** "model calls only", "model calls and files only"; null when the grant doesn't say. */
export function scopesWords(scopes) {
  if (!Array.isArray(scopes)) return null;
  const known = sortScopes(scopes);
  if (!known.length) return null;
  return `${listWords(known.map((id) => scope(id).short))} only`;
}

/** A moment as milliseconds: RFC 3339 strings (expires_at), Unix seconds (created_at) or ms. */
export function toMillis(when) {
  if (!has(when)) return null;
  if (typeof when === "number") return when < 1e12 ? when * 1000 : when;
  const ms = Date.parse(when);
  return Number.isNaN(ms) ? null : ms;
}

/** A duration in words: "30 days", "1 hour", "5 minutes". */
export function durationWords(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const days = s / 86400;
  if (days >= 2 || (days >= 1 && Number.isInteger(days))) return plural(Math.round(days), "day", "days");
  const hours = s / 3600;
  if (hours >= 1) return plural(Math.round(hours), "hour", "hours");
  return plural(Math.max(1, Math.round(s / 60)), "minute", "minutes");
}

/**
 * "expires in 30 days", "expires in 5 hours", "expired 2 days ago"; null when it never expires.
 */
export function expiryWords(expiresAt, now = Date.now()) {
  const at = toMillis(expiresAt);
  if (at === null) return null;
  const diff = (at - now) / 1000;
  if (diff <= 0) return `expired ${durationWords(-diff)} ago`;
  return `expires in ${durationWords(diff)}`;
}

/** Is this moment in the past? */
export function isExpired(expiresAt, now = Date.now()) {
  const at = toMillis(expiresAt);
  return at !== null && at <= now;
}

/**
 * Everything a grant is bound by, in one sentence: "up to $5 a month, gpt-4o-mini only, model
 * calls only, expires in 30 days". `scopes` and `models` are left out when absent.
 */
export function summaryWords({ limits, models, scopes, expiresAt }, now = Date.now(), { capital = false } = {}) {
  const parts = [...limitPhrases(limits), modelsWords(models), scopesWords(scopes), expiryWords(expiresAt, now)].filter(
    Boolean,
  );
  if (!parts.length) return capital ? "No limits" : "no limits";
  // A sentence starts with a capital, but a model keeps its own spelling ("gpt-4o-mini only").
  if (capital && parts[0] !== modelsWords(models)) parts[0] = capitalize(parts[0]);
  return parts.join(", ");
}

export function capitalize(text) {
  return text ? text.charAt(0).toUpperCase() + text.slice(1) : text;
}

// -------------------------------------------------------------------- arithmetic

/** Is nothing limited? */
export function isUnlimited(limits) {
  if (!limits) return true;
  return (
    !has(limits.rpm) &&
    !has(limits.tpm) &&
    !has(limits.max_concurrency) &&
    !budgetWords(limits.budget) &&
    !Object.keys(limits.models || {}).length
  );
}

function minOf(a, b) {
  if (!has(a)) return has(b) ? b : null;
  if (!has(b)) return a;
  return Math.min(a, b);
}

/**
 * What an app asked for, kept within a plan's ceiling: each number the smaller of the two (the
 * ceiling's when the app asked nothing), the budget on the ceiling's period when it has one.
 * Per-model limits come from both (the plan's cannot be dropped). Returns a clean object.
 */
export function withinCeiling(asked, ceiling) {
  const a = asked || {};
  const c = ceiling || {};
  const out = {
    rpm: minOf(a.rpm, c.rpm),
    tpm: minOf(a.tpm, c.tpm),
    max_concurrency: minOf(a.max_concurrency, c.max_concurrency),
    budget: null,
  };
  const ab = budgetWords(a.budget) ? a.budget : null;
  const cb = budgetWords(c.budget) ? c.budget : null;
  if (cb) {
    const samePeriod = ab && ab.period === cb.period;
    out.budget = {
      usd: minOf(samePeriod ? ab.usd : null, cb.usd),
      tokens: minOf(samePeriod ? ab.tokens : null, cb.tokens),
      period: cb.period,
    };
  } else if (ab) {
    out.budget = { usd: has(ab.usd) ? ab.usd : null, tokens: has(ab.tokens) ? ab.tokens : null, period: ab.period || "month" };
  }
  const models = { ...(a.models || {}) };
  for (const [name, cap] of Object.entries(c.models || {})) {
    const mine = models[name] || {};
    models[name] = {
      rpm: minOf(mine.rpm, cap.rpm),
      tpm: minOf(mine.tpm, cap.tpm),
      budget: cap.budget || mine.budget || null,
    };
  }
  if (Object.keys(models).length) out.models = models;
  return out;
}

/**
 * Checks `limits` against a plan's ceiling the way keygate does (limits.rs `within`): returns
 * null, or {field, message} naming the first field over it (`limits.budget.usd`).
 */
export function overCeiling(limits, ceiling) {
  if (!ceiling) return null;
  const l = limits || {};
  const checks = [
    ["limits.rpm", l.rpm, ceiling.rpm, (v) => `${count(v)} requests a minute`],
    ["limits.tpm", l.tpm, ceiling.tpm, (v) => `${count(v)} tokens a minute`],
    ["limits.max_concurrency", l.max_concurrency, ceiling.max_concurrency, (v) => `${count(v)} at a time`],
  ];
  const cb = budgetWords(ceiling.budget) ? ceiling.budget : null;
  if (cb) {
    const per = PERIODS[cb.period]?.per || "";
    checks.push(["limits.budget.usd", l.budget?.usd, cb.usd, (v) => `${money(v)} ${per}`]);
    checks.push(["limits.budget.tokens", l.budget?.tokens, cb.tokens, (v) => `${count(v)} tokens ${per}`]);
  }
  for (const [field, mine, cap, words] of checks) {
    if (!has(cap)) continue;
    if (!has(mine)) return { field, message: `The plan allows at most ${words(cap)}; it can’t be removed.` };
    if (Number(mine) > Number(cap)) return { field, message: `The plan allows at most ${words(cap)}.` };
  }
  return null;
}

/** The limits object to send: only what is set (null when nothing is). */
export function cleanLimits(limits) {
  if (!limits) return null;
  const out = {};
  for (const key of ["rpm", "tpm", "max_concurrency"]) if (has(limits[key])) out[key] = Number(limits[key]);
  const b = limits.budget;
  if (b && (has(b.usd) || has(b.tokens))) {
    out.budget = { period: b.period || "month" };
    if (has(b.usd)) out.budget.usd = Number(b.usd);
    if (has(b.tokens)) out.budget.tokens = Number(b.tokens);
  }
  const models = {};
  for (const [name, m] of Object.entries(limits.models || {})) {
    const own = cleanLimits({ rpm: m?.rpm, tpm: m?.tpm, budget: m?.budget });
    if (own) models[name] = own;
  }
  if (Object.keys(models).length) out.models = models;
  return Object.keys(out).length ? out : null;
}

/** Are two limits objects the same once cleaned? */
export function sameLimits(a, b) {
  return JSON.stringify(cleanLimits(a)) === JSON.stringify(cleanLimits(b));
}
