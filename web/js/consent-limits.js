// The limits part of the consent page (connect.js): what the app asks for, in plain words ("up to
// $5 a month, gpt-4o-mini only, model calls only, expires in 30 days"), and controls that let the
// person lower any of it (budget, requests a minute, requests at a time, expiry sooner), never
// above the plan's ceiling (GET /api/connect/plan; keygate enforces it again on approval). What
// the person leaves in the controls is what the grant gets.

import { h, icon, numberInput, replace } from "./dom.js";
import {
  PERIODS,
  budgetWords,
  cleanLimits,
  count,
  durationWords,
  isUnlimited,
  limitPhrases,
  modelsWords,
  money,
  overCeiling,
  scopesWords,
  summaryWords,
  withinCeiling,
} from "./limits.js";

/** Expiry choices, longest first (seconds). */
export const EXPIRY_CHOICES = [365 * 86_400, 90 * 86_400, 30 * 86_400, 7 * 86_400, 86_400, 3600];
const MAX_EXPIRES_IN = 10 * 365 * 86_400;

/**
 * The limits an app asked for (the SDK's `limits`, or the redirect query's JSON string): an
 * object in keygate's shape, or null. Throws an Error with a message for the person when the
 * app sent something that isn't one.
 */
export function parseAskedLimits(value) {
  if (value === null || value === undefined || value === "") return null;
  let v = value;
  if (typeof v === "string") {
    try {
      v = JSON.parse(v);
    } catch {
      throw new Error("The app sent limits keygate can’t read.");
    }
  }
  if (!v || typeof v !== "object" || Array.isArray(v)) throw new Error("The app sent limits keygate can’t read.");
  const num = (x, name) => {
    if (x === null || x === undefined) return null;
    if (typeof x !== "number" || !Number.isFinite(x) || x <= 0) throw new Error(`The app asked for an invalid limit (${name}).`);
    return x;
  };
  const out = { rpm: num(v.rpm, "rpm"), tpm: num(v.tpm, "tpm"), max_concurrency: num(v.max_concurrency, "max_concurrency"), budget: null };
  if (v.budget) {
    const period = v.budget.period || "month";
    if (!PERIODS[period]) throw new Error("The app asked for a budget period keygate doesn’t know.");
    out.budget = { usd: num(v.budget.usd, "budget.usd"), tokens: num(v.budget.tokens, "budget.tokens"), period };
  }
  if (v.models && typeof v.models === "object") out.models = v.models;
  return out;
}

/** `expiresIn` (seconds) the app asked for, or null. */
export function parseExpiresIn(value) {
  if (value === null || value === undefined || value === "") return null;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new Error("The app asked for an invalid expiry.");
  return Math.min(Math.round(n), MAX_EXPIRES_IN);
}

function expiryLabel(seconds) {
  return `In ${durationWords(seconds)}`;
}

/**
 * Draws the section. `asked`: {limits, expiresIn, models, scopes} from the app; `plan`: keygate's
 * {name, limits} for the plan (null when there is none or it is unknown). Returns {collect()}
 * → {limits, expiresAt} (throws with a message, and marks the field, when a value is refused).
 */
export function renderConsentLimits({ els, asked, plan, planAsked }) {
  const ceiling = plan?.limits && !isUnlimited(plan.limits) ? plan.limits : null;
  const base = withinCeiling(asked.limits, ceiling);
  const cb = ceiling && budgetWords(ceiling.budget) ? ceiling.budget : null;

  // What the app asks for, in words.
  const askedWords = summaryWords(
    {
      limits: asked.limits,
      models: asked.models,
      scopes: asked.scopes,
      expiresAt: asked.expiresIn ? Date.now() + asked.expiresIn * 1000 : null,
    },
    Date.now(),
    { capital: true },
  );
  const askedAnything = Boolean(asked.limits && !isUnlimited(asked.limits)) || Boolean(asked.expiresIn);
  replace(
    els.asked,
    h("span", { class: "asked-label" }, "The app asks for"),
    h(
      "strong",
      { id: "limits-asked-words" },
      askedAnything ? askedWords : `No budget or expiry; ${summaryWords({ models: asked.models, scopes: asked.scopes })}`,
    ),
  );

  // The plan and its ceiling.
  els.planRow.hidden = !planAsked && !plan?.name;
  els.planName.textContent = plan?.name || planAsked || "";
  if (planAsked && !plan) {
    els.planHint.textContent = "This keygate has no plan by that name: approving will fail. Tell the app’s developer.";
  } else if (ceiling) {
    els.planHint.textContent = `The most it allows: ${limitPhrases(ceiling).join(", ")}. You can lower any of it.`;
  } else {
    els.planHint.textContent = "No ceiling: you choose any limits below.";
  }

  // The controls, prefilled with what the app asked for (within the plan).
  const fields = [];
  const per = (p) => PERIODS[p]?.per || "a month";
  const budgetPeriod = cb?.period || base.budget?.period || "month";
  const usdInput = numberInput("limit-usd", base.budget?.usd, { max: cb?.usd, step: "0.01", min: "0.01" });
  const periodControl = cb
    ? h("span", { class: "affix" }, per(budgetPeriod))
    : h(
        "select",
        { id: "limit-period", "aria-label": "Budget period" },
        Object.keys(PERIODS).map((p) => h("option", { value: p, selected: p === budgetPeriod }, per(p))),
      );
  fields.push(
    control({
      id: "limit-usd",
      label: "Budget",
      input: usdInput,
      prefix: "$",
      after: periodControl,
      hint: cb?.usd != null ? `At most ${money(cb.usd)} ${per(budgetPeriod)} (the plan).` : "Empty: no budget.",
      wide: true,
    }),
  );
  if (base.budget?.tokens != null || cb?.tokens != null) {
    fields.push(
      control({
        id: "limit-tokens",
        label: "Token budget",
        input: numberInput("limit-tokens", base.budget?.tokens, { max: cb?.tokens }),
        suffix: `tokens ${per(budgetPeriod)}`,
        hint: cb?.tokens != null ? `At most ${count(cb.tokens)}.` : "Empty: no token budget.",
      }),
    );
  }
  fields.push(
    control({
      id: "limit-rpm",
      label: "Requests a minute",
      input: numberInput("limit-rpm", base.rpm, { max: ceiling?.rpm }),
      hint: ceiling?.rpm != null ? `At most ${count(ceiling.rpm)}.` : "Empty: no limit.",
    }),
  );
  if (base.tpm != null || ceiling?.tpm != null) {
    fields.push(
      control({
        id: "limit-tpm",
        label: "Tokens a minute",
        input: numberInput("limit-tpm", base.tpm, { max: ceiling?.tpm }),
        hint: ceiling?.tpm != null ? `At most ${count(ceiling.tpm)}.` : "Empty: no limit.",
      }),
    );
  }
  fields.push(
    control({
      id: "limit-concurrency",
      label: "Requests at a time",
      input: numberInput("limit-concurrency", base.max_concurrency, { max: ceiling?.max_concurrency }),
      hint: ceiling?.max_concurrency != null ? `At most ${count(ceiling.max_concurrency)}.` : "Empty: no limit.",
    }),
  );
  // Expiry: what the app asked for, or sooner; "Never" only when it asked for no expiry.
  const choices = asked.expiresIn
    ? [asked.expiresIn, ...EXPIRY_CHOICES.filter((s) => s < asked.expiresIn)]
    : [0, ...EXPIRY_CHOICES];
  const expirySelect = h(
    "select",
    { id: "limit-expiry" },
    choices.map((s, i) =>
      h(
        "option",
        { value: String(s), selected: i === 0 },
        s === 0 ? "Never" : `${expiryLabel(s)}${asked.expiresIn && i === 0 ? " (asked by the app)" : ""}`,
      ),
    ),
  );
  fields.push(control({ id: "limit-expiry", label: "Key expires", input: expirySelect, hint: asked.expiresIn ? "Sooner is fine; later isn’t offered." : null }));

  const grid = h("div", { class: "limit-controls" }, fields);
  // Nothing asked, no plan: the controls are there, folded, for a person who wants a cap.
  const folded = !askedAnything && !ceiling;
  replace(
    els.controls,
    folded
      ? h("details", { class: "limits-more", id: "limits-more" }, h("summary", {}, icon("sliders"), "Set a budget or limits (optional)"), grid)
      : grid,
  );

  const form = grid;
  form.addEventListener("input", (event) => {
    clearError(event.target);
    update();
  });
  form.addEventListener("change", update);

  function read(id, { integer = true } = {}) {
    const input = form.querySelector(`#${id}`);
    if (!input) return null;
    const raw = input.value.trim();
    if (!raw) return null;
    const v = Number(raw);
    if (!Number.isFinite(v) || v <= 0) throw fieldError(id, "Enter a number above zero, or leave it empty.");
    if (integer && !Number.isInteger(v)) throw fieldError(id, "Enter a whole number.");
    return v;
  }

  /** What the person chose: {limits, expiresIn}. */
  function chosen() {
    const usd = read("limit-usd", { integer: false });
    const tokens = read("limit-tokens");
    const limits = {
      rpm: read("limit-rpm"),
      tpm: read("limit-tpm"),
      max_concurrency: read("limit-concurrency"),
      budget: usd !== null || tokens !== null ? { usd, tokens, period: cb?.period || form.querySelector("#limit-period")?.value || "month" } : null,
      models: base.models,
    };
    const over = overCeiling(limits, ceiling);
    if (over) {
      const id = { "limits.rpm": "limit-rpm", "limits.tpm": "limit-tpm", "limits.max_concurrency": "limit-concurrency", "limits.budget.usd": "limit-usd", "limits.budget.tokens": "limit-tokens" }[over.field];
      throw fieldError(id, over.message);
    }
    return { limits: cleanLimits(limits), expiresIn: Number(expirySelect.value) || null };
  }

  function update() {
    try {
      const c = chosen();
      replace(
        els.result,
        h("span", { class: "asked-label" }, "It will get"),
        h(
          "strong",
          { id: "limits-result-words" },
          summaryWords(
            { limits: c.limits, expiresAt: c.expiresIn ? Date.now() + c.expiresIn * 1000 : null },
            Date.now(),
            { capital: true },
          ),
        ),
      );
    } catch {
      // The field says what is wrong.
    }
  }
  update();

  function fieldError(id, message) {
    const input = id ? form.querySelector(`#${id}`) : null;
    const err = id ? form.querySelector(`#${id}-error`) : null;
    if (input && err) {
      input.setAttribute("aria-invalid", "true");
      replace(err, icon("alert"), h("span", {}, message));
      err.hidden = false;
      const details = input.closest("details");
      if (details) details.open = true;
    }
    return Object.assign(new Error(message), { fieldId: id });
  }

  function clearError(input) {
    if (!input?.id) return;
    input.removeAttribute("aria-invalid");
    const err = form.querySelector(`#${input.id}-error`);
    if (err) {
      err.hidden = true;
      err.textContent = "";
    }
  }

  return {
    /** {limits, expiresAt}: throws (and marks the field) when a value is refused. */
    collect() {
      for (const input of form.querySelectorAll("[aria-invalid]")) clearError(input);
      let c;
      try {
        c = chosen();
      } catch (err) {
        form.querySelector(`#${err.fieldId}`)?.focus();
        throw err;
      }
      const expiresAt = c.expiresIn ? new Date(Date.now() + c.expiresIn * 1000).toISOString().replace(/\.\d{3}Z$/, "Z") : null;
      return { limits: c.limits, expiresAt };
    },
  };
}

function control({ id, label, input, prefix = null, suffix = null, after = null, hint = null, wide = false }) {
  const hintId = hint ? `${id}-hint` : null;
  input.setAttribute("aria-describedby", [hintId, `${id}-error`].filter(Boolean).join(" "));
  return h(
    "div",
    { class: `field limit-field${wide ? " is-wide" : ""}` },
    h("label", { for: id }, label),
    h(
      "div",
      { class: "input-affix" },
      prefix ? h("span", { class: "affix", "aria-hidden": "true" }, prefix) : null,
      input,
      suffix ? h("span", { class: "affix" }, suffix) : null,
      after,
    ),
    hint ? h("p", { class: "hint", id: hintId }, hint) : null,
    h("p", { class: "field-error", id: `${id}-error`, hidden: true }),
  );
}

// Re-exported for connect.js's summary of an existing connection.
export { modelsWords, scopesWords };
