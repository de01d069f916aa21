// One app's panel on the dashboard, under the list of apps: its limits in words and a form to
// change them (PATCH /api/grants/{id}, within its plan: keygate refuses anything above it and
// its message goes next to the field it names), what it spent this period and what is left of
// its budget, usage and cost per day (usage.js: chart and table), rotating its key with a grace
// period (a step-up, like creating one), disabling and enabling it, and removing it from the
// list once revoked.

import { api } from "./api.js";
import { busy, formatDate, h, icon, numberInput, replace, showMessage, timeEl } from "./dom.js";
import {
  PERIODS,
  budgetWords,
  capitalize,
  cleanLimits,
  count,
  durationWords,
  expiryWords,
  isExpired,
  limitPhrases,
  money,
  sameLimits,
  scopesWords,
  toMillis,
} from "./limits.js";
import { confirmDialog, toast } from "./ui.js";
import { dailyTotals, usageChart, usageTable } from "./usage.js";

/** How long the old key keeps working after a rotation: the choices offered. */
export const GRACE_CHOICES = [
  { seconds: 0, label: "Stops at once" },
  { seconds: 600, label: "Keeps working 10 minutes" },
  { seconds: 3600, label: "Keeps working 1 hour" },
  { seconds: 86_400, label: "Keeps working 1 day" },
  { seconds: 604_800, label: "Keeps working 7 days" },
];

/** keygate's `param` of a refused change → the form field it is about. */
const PARAM_FIELDS = {
  "limits.budget": "gd-budget-usd",
  "limits.budget.usd": "gd-budget-usd",
  "limits.budget.tokens": "gd-budget-tokens",
  "limits.budget.period": "gd-budget-period",
  "limits.rpm": "gd-rpm",
  "limits.tpm": "gd-tpm",
  "limits.max_concurrency": "gd-concurrency",
  expires_at: "gd-expires",
};

const dateTimeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const utcResetFmt = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", timeZone: "UTC" });

/** "Dec 1, 00:00 UTC": budgets reset on the UTC calendar. */
function resetWords(resetsAt) {
  const ms = toMillis(resetsAt);
  return ms === null ? null : `${utcResetFmt.format(new Date(ms))}, 00:00 UTC`;
}

/** A `<time>` for an RFC 3339 moment (expires_at). */
function momentEl(when) {
  const ms = toMillis(when);
  if (ms === null) return null;
  const date = new Date(ms);
  return h("time", { datetime: date.toISOString(), title: dateTimeFmt.format(date) }, formatDate(ms / 1000));
}

/** A `<time>` with the date and time (when a rotated-out key stops). */
function rotatedEl(seconds) {
  const date = new Date(seconds * 1000);
  return h("time", { datetime: date.toISOString() }, dateTimeFmt.format(date));
}

/** The local calendar date of a moment, as an <input type=date> value. */
function localDateValue(when) {
  const ms = toMillis(when);
  if (ms === null) return "";
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/** The end of a local calendar day, as keygate's RFC 3339 (whole seconds, UTC). */
function endOfLocalDay(value) {
  const [y, m, d] = value.split("-").map(Number);
  return new Date(y, m - 1, d, 23, 59, 59).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/**
 * The panel, drawn into `container`. `onChanged()` reloads the list of grants (it calls
 * update() with the new list); `showNewKey(created, {note})` shows a rotated key once.
 */
export function createGrantDetail({ container, onChanged, showNewKey }) {
  let grant = null;
  let editing = false;
  let usage = null; // the usage answer; null while loading, false when this keygate has none
  let plan = null; // the plan's {name, limits}, when the grant is on one
  let metric = "usd";
  let chartBox = null;
  let observer = null;
  let lastWidth = 0;
  const plans = new Map();

  async function planFor(name) {
    if (!name) return null;
    if (!plans.has(name)) {
      plans.set(
        name,
        api.get(`/api/connect/plan?name=${encodeURIComponent(name)}`).catch(() => null),
      );
    }
    return plans.get(name);
  }

  async function loadUsage(g) {
    try {
      return await api.get(`/api/grants/${encodeURIComponent(g.id)}/usage`);
    } catch (err) {
      // A keygate without the usage route (or a grant it no longer has): no usage section.
      if (err.status === 404 || err.status === 405) return false;
      throw err;
    }
  }

  async function open(g) {
    const same = grant?.id === g.id;
    grant = g;
    if (!same) {
      editing = false;
      usage = null;
      plan = null;
    }
    container.hidden = false;
    render();
    container.scrollIntoView({ block: "start", behavior: "instant" });
    container.querySelector("h3")?.focus({ preventScroll: true });
    await reload();
  }

  async function reload() {
    const g = grant;
    if (!g) return;
    try {
      const [u, p] = await Promise.all([loadUsage(g), planFor(g.plan)]);
      if (grant !== g) return;
      usage = u;
      plan = p;
    } catch (err) {
      if (grant !== g) return;
      usage = false;
      showMessage(container.querySelector("#gd-msg"), "error", `Usage couldn't be loaded: ${err.message}`);
    }
    render();
  }

  function close() {
    const id = grant?.id;
    grant = null;
    editing = false;
    observer?.disconnect();
    observer = null;
    container.hidden = true;
    replace(container);
    return id;
  }

  /** The list was reloaded: follow this grant's new state (or close when it is gone). */
  function update(grants) {
    if (!grant) return;
    const fresh = (grants || []).find((g) => g.id === grant.id);
    if (!fresh) {
      close();
      return;
    }
    grant = fresh;
    render();
  }

  // ------------------------------------------------------------------- drawing

  function render() {
    const g = grant;
    if (!g) return;
    const msg = container.querySelector("#gd-msg");
    const keep = msg ? [...msg.childNodes] : [];
    observer?.disconnect();
    observer = null;
    const revoked = g.state === "revoked";
    replace(
      container,
      h(
        "div",
        { class: "gd-head" },
        h(
          "div",
          { class: "gd-head-main" },
          h("h3", { id: "gd-title", tabindex: "-1" }, g.name),
          h(
            "p",
            { class: "gd-meta" },
            stateBadge(g),
            g.origin ? h("span", { class: "origin" }, g.origin) : null,
            h("span", {}, "Added ", timeEl(g.created_at)),
          ),
        ),
        h(
          "button",
          { class: "btn btn-sm btn-ghost", type: "button", id: "gd-close", onclick: closeAndReturn },
          icon("x"),
          "Close",
        ),
      ),
      h("div", { id: "gd-msg", "aria-live": "polite" }, keep),
      h("div", { class: "gd-grid" }, editing && !revoked ? limitsForm(g) : limitsView(g), budgetBlock(g)),
      usageBlock(g),
      revoked ? removeBlock(g) : keyBlock(g),
    );
    drawChart();
  }

  function closeAndReturn() {
    const id = close();
    for (const b of document.querySelectorAll("#grants-table .manage-btn")) b.setAttribute("aria-expanded", "false");
    document.querySelector(`#grants-table tr[data-grant-id="${CSS.escape(id || "")}"] .manage-btn`)?.focus();
  }

  function stateBadge(g) {
    if (g.state === "active" && isExpired(g.expires_at)) return h("span", { class: "badge badge-revoked" }, "Expired");
    const labels = { active: "Active", disabled: "Disabled", revoked: "Revoked" };
    return h("span", { class: `badge badge-${g.state}` }, labels[g.state] || g.state);
  }

  function limitsView(g) {
    const phrases = limitPhrases(g.limits);
    // Models and scopes keep their own spelling: "Models: gpt-4o-mini", "May use: model calls".
    const extra = [
      Array.isArray(g.models) && g.models.length ? `Models: ${g.models.join(", ")}` : null,
      scopesWords(g.scopes) ? `May use: ${scopesWords(g.scopes).replace(/ only$/, "")}` : null,
    ].filter(Boolean);
    const expiry = g.expires_at
      ? h("li", { class: "limit-expiry" }, icon("clock"), h("span", {}, capitalize(expiryWords(g.expires_at)), " (", momentEl(g.expires_at), ")"))
      : h("li", { class: "limit-expiry" }, icon("clock"), h("span", {}, "Never expires"));
    const revoked = g.state === "revoked";
    const items = [
      ...(phrases.length ? phrases : ["No spending or rate limit"]).map((p, i) =>
        h("li", { class: !phrases.length ? "faint" : null }, icon(i === 0 && phrases.length && budgetWords(g.limits?.budget) ? "wallet" : "gauge"), h("span", {}, capitalize(p))),
      ),
      ...extra.map((p) => h("li", {}, icon("check"), h("span", {}, p))),
      revoked ? null : expiry,
    ];
    return h(
      "section",
      { class: "gd-block", "aria-labelledby": "gd-limits-title" },
      h(
        "div",
        { class: "gd-block-head" },
        h("h4", { id: "gd-limits-title" }, "Limits"),
        g.state === "revoked"
          ? null
          : h(
              "button",
              {
                class: "btn btn-sm",
                type: "button",
                id: "gd-edit",
                "aria-label": `Edit limits of ${g.name}`,
                onclick: () => {
                  editing = true;
                  render();
                  container.querySelector("#gd-budget-usd")?.focus();
                },
              },
              icon("pencil"),
              "Edit",
            ),
      ),
      h("ul", { class: "limit-words", id: "gd-limit-words", "aria-label": `Limits of ${g.name}` }, items),
      g.plan ? planNote(g) : null,
    );
  }

  function planNote(g) {
    const ceiling = plan?.limits ? limitPhrases(plan.limits) : [];
    return h(
      "p",
      { class: "hint plan-note" },
      "Plan ",
      h("span", { class: "chip" }, g.plan),
      ceiling.length ? ` allows at most: ${ceiling.join(", ")}.` : " (no ceiling of its own).",
    );
  }

  // ------------------------------------------------------------------- edit form

  function field({ id, label, input, prefix = null, suffix = null, hint = null }) {
    const errorId = `${id}-error`;
    const hintId = hint ? `${id}-hint` : null;
    input.setAttribute("aria-describedby", [hintId, errorId].filter(Boolean).join(" "));
    return h(
      "div",
      { class: "field limit-field" },
      h("label", { for: id }, label),
      h("div", { class: "input-affix" }, prefix ? h("span", { class: "affix", "aria-hidden": "true" }, prefix) : null, input, suffix ? h("span", { class: "affix" }, suffix) : null),
      hint ? h("p", { class: "hint", id: hintId }, hint) : null,
      h("p", { class: "field-error", id: errorId, hidden: true }),
    );
  }

  function capHint(cap, words) {
    return cap !== null && cap !== undefined ? `The plan allows at most ${words(cap)}.` : "Empty: no limit.";
  }

  function limitsForm(g) {
    const l = g.limits || {};
    const c = plan?.limits || {};
    const cb = budgetWords(c.budget) ? c.budget : null;
    const period = cb?.period || l.budget?.period || "month";
    const per = (p) => PERIODS[p]?.per || "";

    const periodSelect = h(
      "select",
      { id: "gd-budget-period", disabled: Boolean(cb) },
      Object.keys(PERIODS).map((p) => h("option", { value: p, selected: p === period }, `${capitalize(per(p).replace(/^a /, "per "))}`)),
    );
    const form = h(
      "form",
      { class: "gd-block limits-form", id: "gd-limits-form", novalidate: true, "aria-labelledby": "gd-limits-title" },
      h("div", { class: "gd-block-head" }, h("h4", { id: "gd-limits-title" }, `Edit limits of ${g.name}`)),
      h(
        "fieldset",
        { class: "limit-budget" },
        h("legend", {}, "Budget"),
        h(
          "div",
          { class: "limit-row" },
          field({
            id: "gd-budget-usd",
            label: "Dollars",
            prefix: "$",
            input: numberInput("gd-budget-usd", l.budget?.usd, { max: cb?.usd, step: "0.01", min: "0.01" }),
            hint: cb?.usd != null ? `At most ${money(cb.usd)}.` : null,
          }),
          field({
            id: "gd-budget-tokens",
            label: "Tokens",
            input: numberInput("gd-budget-tokens", l.budget?.tokens, { max: cb?.tokens }),
            hint: cb?.tokens != null ? `At most ${count(cb.tokens)}.` : null,
          }),
          field({
            id: "gd-budget-period",
            label: "Resets",
            input: periodSelect,
            hint: cb ? "Set by the plan." : null,
          }),
        ),
        h("p", { class: "hint" }, "Empty: no budget. It resets at 00:00 UTC (weeks on Monday)."),
      ),
      h(
        "div",
        { class: "limit-row" },
        field({
          id: "gd-rpm",
          label: "Requests a minute",
          input: numberInput("gd-rpm", l.rpm, { max: c.rpm }),
          hint: capHint(c.rpm, count),
        }),
        field({
          id: "gd-tpm",
          label: "Tokens a minute",
          input: numberInput("gd-tpm", l.tpm, { max: c.tpm }),
          hint: capHint(c.tpm, count),
        }),
        field({
          id: "gd-concurrency",
          label: "Requests at a time",
          input: numberInput("gd-concurrency", l.max_concurrency, { max: c.max_concurrency }),
          hint: capHint(c.max_concurrency, count),
        }),
      ),
      h(
        "div",
        { class: "limit-row" },
        field({
          id: "gd-expires",
          label: "Expires after",
          input: h("input", { id: "gd-expires", type: "date", value: localDateValue(g.expires_at) }),
          hint: "The end of that day. Empty: never expires.",
        }),
      ),
      h("div", { id: "gd-form-msg", "aria-live": "polite" }),
      h(
        "div",
        { class: "form-actions" },
        h("button", { class: "btn btn-primary", type: "submit", id: "gd-save" }, "Save limits"),
        h(
          "button",
          {
            class: "btn",
            type: "button",
            onclick: () => {
              editing = false;
              render();
              container.querySelector("#gd-edit")?.focus();
            },
          },
          "Cancel",
        ),
      ),
    );
    form.addEventListener("input", (event) => clearFieldError(event.target));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      saveLimits(form);
    });
    return form;
  }

  function clearFieldError(input) {
    if (!input?.id) return;
    input.removeAttribute("aria-invalid");
    const err = container.querySelector(`#${CSS.escape(input.id)}-error`);
    if (err) {
      err.hidden = true;
      err.textContent = "";
    }
  }

  function fieldError(id, message) {
    const input = container.querySelector(`#${id}`);
    const err = container.querySelector(`#${id}-error`);
    if (!input || !err) return false;
    input.setAttribute("aria-invalid", "true");
    // keygate's message may start with the field's name ("limits.rpm: …"): the field is shown.
    const text = String(message)
      .replace(/^(limits\.[\w.-]+|expires_at|plan): /, "")
      .replace(/^`expires_at`/, "The date")
      .replace(/`/g, "");
    replace(err, icon("alert"), h("span", {}, capitalize(text)));
    err.hidden = false;
    input.focus();
    return true;
  }

  function readNumber(form, id) {
    const input = form.querySelector(`#${id}`);
    const raw = input.value.trim();
    if (!raw) return null;
    const v = Number(raw);
    if (!Number.isFinite(v) || v <= 0) throw Object.assign(new Error("Enter a number above zero, or leave it empty."), { fieldId: id });
    if (input.step === "1" && !Number.isInteger(v)) throw Object.assign(new Error("Enter a whole number."), { fieldId: id });
    return v;
  }

  async function saveLimits(form) {
    const g = grant;
    const msg = form.querySelector("#gd-form-msg");
    showMessage(msg, "", "");
    for (const input of form.querySelectorAll("[aria-invalid]")) clearFieldError(input);
    let limits;
    try {
      const usd = readNumber(form, "gd-budget-usd");
      const tokens = readNumber(form, "gd-budget-tokens");
      limits = {
        rpm: readNumber(form, "gd-rpm"),
        tpm: readNumber(form, "gd-tpm"),
        max_concurrency: readNumber(form, "gd-concurrency"),
        budget: usd !== null || tokens !== null ? { usd, tokens, period: form.querySelector("#gd-budget-period").value } : null,
        // Per-model limits (from a plan) aren't edited here: they are kept as they are.
        models: g.limits?.models || undefined,
      };
    } catch (err) {
      if (!err.fieldId || !fieldError(err.fieldId, err.message)) showMessage(msg, "error", err.message);
      return;
    }
    const body = {};
    if (!sameLimits(limits, g.limits)) body.limits = cleanLimits(limits);
    const date = form.querySelector("#gd-expires").value;
    if (date !== localDateValue(g.expires_at)) body.expires_at = date ? endOfLocalDay(date) : null;
    if (!Object.keys(body).length) {
      editing = false;
      render();
      toast("Nothing changed.");
      return;
    }
    let updated;
    try {
      updated = await busy(form.querySelector("#gd-save"), () =>
        api.patch(`/api/grants/${encodeURIComponent(g.id)}`, body, {
          // keygate asks for it only when the change gives the app more than it has.
          stepUpMessage: `Raising what “${g.name}” may spend or how long its key lives needs your passkey once more.`,
        }),
      );
    } catch (err) {
      const id = PARAM_FIELDS[err.param];
      if (!id || !fieldError(id, err.message)) showMessage(msg, "error", err.message);
      return;
    }
    if (grant?.id !== g.id) return;
    grant = updated && updated.id ? updated : g;
    editing = false;
    render();
    container.querySelector("#gd-edit")?.focus();
    toast(`Limits of “${g.name}” saved. They apply from its next request.`);
    await onChanged();
  }

  // ------------------------------------------------------------------- budget

  function budgetBlock(g) {
    const summary = usage?.summary;
    const remaining = usage?.remaining;
    const periodName = summary?.period || g.limits?.budget?.period || "month";
    const title = capitalize(PERIODS[periodName]?.current || "This period");
    const head = h("div", { class: "gd-block-head" }, h("h4", { id: "gd-budget-title" }, title));
    const block = (...children) => h("section", { class: "gd-block gd-budget", "aria-labelledby": "gd-budget-title" }, head, children);
    if (usage === null) return block(h("p", { class: "muted small", role: "status" }, "Loading usage…"));
    if (usage === false || !summary) {
      return block(h("p", { class: "muted small" }, "This keygate doesn’t report usage for apps yet."));
    }
    // A revoked app spends nothing more: what it spent, without what would be left.
    const budget = g.state === "revoked" ? null : g.limits?.budget;
    const meters = [];
    if (budget?.usd != null) {
      const left = remaining?.usd ?? Math.max(0, budget.usd - (summary.usd || 0));
      meters.push(meter({ id: "gd-left-usd", left, total: budget.usd, leftWords: money(left, { floor: true }), totalWords: money(budget.usd), unit: "" }));
    }
    if (budget?.tokens != null) {
      const left = remaining?.tokens ?? Math.max(0, budget.tokens - (summary.tokens || 0));
      meters.push(meter({ id: "gd-left-tokens", left, total: budget.tokens, leftWords: count(left), totalWords: count(budget.tokens), unit: " tokens" }));
    }
    const reset = resetWords(summary.resets_at);
    return block(
      meters.length
        ? meters
        : g.state === "revoked"
          ? null
          : h("p", { class: "muted small" }, "No budget: it may spend without a cap. Edit its limits to set one."),
      h(
        "dl",
        { class: "stats" },
        stat("Spent", money(summary.usd)),
        stat("Requests", count(summary.requests)),
        stat("Tokens", count(summary.tokens)),
      ),
      reset && meters.length ? h("p", { class: "hint", id: "gd-reset" }, icon("refresh"), h("span", {}, `Resets ${reset}`)) : null,
    );
  }

  function meter({ id, left, total, leftWords, totalWords, unit }) {
    const spent = Math.min(1, Math.max(0, total > 0 ? 1 - left / total : 1));
    const width = 100;
    const low = left <= 0 ? " is-empty" : spent >= 0.8 ? " is-low" : "";
    const bar = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    bar.setAttribute("class", `meter${low}`);
    bar.setAttribute("viewBox", `0 0 ${width} 8`);
    bar.setAttribute("preserveAspectRatio", "none");
    bar.setAttribute("aria-hidden", "true");
    const track = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    track.setAttribute("class", "meter-track");
    track.setAttribute("width", String(width));
    track.setAttribute("height", "8");
    const fill = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    fill.setAttribute("class", "meter-fill");
    fill.setAttribute("width", String(Math.round(spent * width * 10) / 10));
    fill.setAttribute("height", "8");
    bar.append(track, fill);
    return h(
      "div",
      { class: `budget-left${low}`, id },
      h("p", { class: "left-big" }, h("strong", {}, `${leftWords}${unit}`), " left"),
      h("p", { class: "left-of muted small" }, `of ${totalWords}${unit}`),
      bar,
    );
  }

  function stat(label, value) {
    return h("div", { class: "stat" }, h("dt", {}, label), h("dd", {}, value));
  }

  // ------------------------------------------------------------------- usage

  function usageBlock(g) {
    if (usage === false) return null;
    const section = h("section", { class: "gd-usage", "aria-labelledby": "gd-usage-title" });
    const range = usage?.from && usage?.to ? ` (${formatUtcDay(usage.from)} – ${formatUtcDay(usage.to)})` : "";
    const toggle = h(
      "div",
      { class: "segmented", role: "group", "aria-label": "Show per day" },
      [
        ["usd", "Cost"],
        ["tokens", "Tokens"],
      ].map(([value, label]) =>
        h(
          "button",
          {
            class: "segment",
            type: "button",
            "aria-pressed": String(metric === value),
            dataset: { metric: value },
            onclick: () => {
              metric = value;
              for (const b of toggle.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset.metric === metric));
              lastWidth = 0;
              drawChart();
            },
          },
          label,
        ),
      ),
    );
    chartBox = h("div", { class: "chart-box", id: "gd-chart" });
    section.append(
      h("div", { class: "gd-block-head" }, h("h4", { id: "gd-usage-title" }, "Usage per day", h("span", { class: "muted small" }, range)), toggle),
    );
    if (usage === null) {
      section.append(h("p", { class: "muted small" }, "Loading usage…"));
      return section;
    }
    section.append(chartBox, usageTable(usage, `Usage of ${g.name} per day and model`));
    return section;
  }

  function formatUtcDay(day) {
    const ms = Date.parse(`${day}T00:00:00Z`);
    return Number.isNaN(ms) ? day : utcResetFmt.format(new Date(ms));
  }

  /** Draws the chart at its box's width, and again whenever that width changes. */
  function drawChart() {
    if (!chartBox || !usage || !chartBox.isConnected) return;
    const box = chartBox;
    const draw = () => {
      const width = Math.floor(box.clientWidth);
      if (!width || Math.abs(width - lastWidth) < 2) return;
      lastWidth = width;
      replace(box, usageChart(dailyTotals(usage), { metric, width }));
    };
    lastWidth = 0;
    draw();
    if (typeof ResizeObserver === "function") {
      observer = new ResizeObserver(draw);
      observer.observe(box);
    }
  }

  // ------------------------------------------------------------------- key

  function keyBlock(g) {
    const disabled = g.state === "disabled";
    const graceSelect = h(
      "select",
      { id: "gd-grace", "aria-describedby": "gd-grace-hint" },
      GRACE_CHOICES.map((c) => h("option", { value: String(c.seconds), selected: c.seconds === 3600 }, c.label)),
    );
    const rotateBtn = h("button", { class: "btn", type: "submit", id: "gd-rotate" }, icon("refresh"), "Rotate key");
    const rotate = h(
      "form",
      { class: "key-action", novalidate: true, "aria-labelledby": "gd-rotate-title" },
      h("div", { class: "key-action-text" }, h("h5", { id: "gd-rotate-title" }, "Rotate the key"), h("p", { class: "hint", id: "gd-grace-hint" }, "A new key, shown once. The old one can keep working for a while, so the app can switch without failing.")),
      h("div", { class: "key-action-controls" }, h("label", { for: "gd-grace", class: "visually-hidden" }, "The old key"), graceSelect, rotateBtn),
    );
    rotate.addEventListener("submit", (event) => {
      event.preventDefault();
      rotateKey(g, Number(graceSelect.value), rotateBtn);
    });
    const toggleBtn = h(
      "button",
      { class: `btn ${disabled ? "btn-primary" : ""}`.trim(), type: "button", id: "gd-toggle", onclick: (e) => setEnabled(g, disabled, e.currentTarget) },
      icon(disabled ? "check" : "pause"),
      disabled ? "Enable" : "Disable",
    );
    const toggle = h(
      "div",
      { class: "key-action" },
      h(
        "div",
        { class: "key-action-text" },
        h("h5", {}, disabled ? "Disabled" : "Disable for now"),
        h(
          "p",
          { class: "hint" },
          disabled
            ? "The app’s requests are refused until you enable it again. Its key and limits are kept."
            : "Refuses the app’s requests until you enable it again; nothing else changes.",
        ),
      ),
      h("div", { class: "key-action-controls" }, toggleBtn),
    );
    return h(
      "section",
      { class: "gd-key", "aria-labelledby": "gd-key-title" },
      h("div", { class: "gd-block-head" }, h("h4", { id: "gd-key-title" }, "Key")),
      g.rotated_until && g.rotated_until * 1000 > Date.now()
        ? h("p", { class: "alert alert-info" }, icon("info"), h("span", {}, "The previous key keeps working until ", rotatedEl(g.rotated_until), ", then stops."))
        : null,
      rotate,
      toggle,
    );
  }

  async function rotateKey(g, grace, button) {
    const msg = container.querySelector("#gd-msg");
    showMessage(msg, "", "");
    let out;
    try {
      out = await busy(button, () =>
        api.post(
          `/api/grants/${encodeURIComponent(g.id)}/rotate`,
          { grace_seconds: grace },
          { stepUpMessage: `A new key for “${g.name}” replaces its current one, so keygate asks for your passkey once more.` },
        ),
      );
    } catch (err) {
      showMessage(msg, "error", err.message);
      return;
    }
    const until = out?.grant?.rotated_until;
    const note =
      grace > 0 && until
        ? `The old key keeps working until ${dateTimeFmt.format(new Date(until * 1000))} (${durationWords(grace)}), then stops. Give the app this new key before then.`
        : "The old key has stopped working. Give the app this new key.";
    showNewKey(out, { note, heading: `New key for “${g.name}”` });
    await onChanged();
  }

  async function setEnabled(g, enable, button) {
    const msg = container.querySelector("#gd-msg");
    showMessage(msg, "", "");
    try {
      await busy(button, () => api.post(`/api/grants/${encodeURIComponent(g.id)}/${enable ? "enable" : "disable"}`, {}));
    } catch (err) {
      showMessage(msg, "error", err.message);
      return;
    }
    toast(enable ? `“${g.name}” is enabled again.` : `“${g.name}” is disabled: its requests are refused until you enable it.`);
    await onChanged();
    container.querySelector("#gd-toggle")?.focus();
  }

  function removeBlock(g) {
    return h(
      "section",
      { class: "gd-key", "aria-labelledby": "gd-key-title" },
      h("div", { class: "gd-block-head" }, h("h4", { id: "gd-key-title" }, "Key")),
      h(
        "div",
        { class: "key-action" },
        h(
          "div",
          { class: "key-action-text" },
          h("h5", {}, "Revoked", g.revoked_at ? [" ", timeEl(g.revoked_at)] : null),
          h("p", { class: "hint" }, "Its key no longer works. Remove it to tidy your list."),
        ),
        h(
          "div",
          { class: "key-action-controls" },
          h("button", { class: "btn btn-danger-outline", type: "button", onclick: () => removeGrant(g, { onChanged }) }, icon("trash"), "Remove from list"),
        ),
      ),
    );
  }

  return { open, close, update, get currentId() { return grant?.id || null; } };
}

/** Removes a revoked app from the list (DELETE on a revoked grant), after asking. */
export function removeGrant(g, { onChanged }) {
  return confirmDialog({
    title: `Remove “${g.name}” from the list?`,
    message: "Its key already stopped working. keygate forgets this app; this can’t be undone.",
    confirmLabel: "Remove",
    danger: true,
    iconName: "trash",
    action: async () => {
      await api.del(`/api/grants/${encodeURIComponent(g.id)}`);
      await onChanged();
      toast(`“${g.name}” was removed.`);
    },
  });
}
