// An app's usage on the dashboard: cost or tokens per UTC day as a bar chart (an SVG drawn here,
// no library), and the same numbers as a table (day, model, requests, tokens, cost). The input is
// keygate's answer to GET /api/grants/{id}/usage: {from, to, days: [{day, model, requests,
// errors, prompt_tokens, cached_tokens, completion_tokens, usd, estimated}], summary, remaining}.
//
// The chart is an image with a title and a description for assistive technology (each bar also
// has its own <title>, shown on hover); the table carries the exact figures.

import { h } from "./dom.js";
import { count, money } from "./limits.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const DAY_MS = 86_400_000;

const dayFmt = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", timeZone: "UTC" });
const longDayFmt = new Intl.DateTimeFormat(undefined, { weekday: "short", month: "short", day: "numeric", timeZone: "UTC" });

const weekdayFmt = new Intl.DateTimeFormat(undefined, { weekday: "short", timeZone: "UTC" });

/** "2026-11-30" → "Mon". */
function weekday(day) {
  const ms = Date.parse(`${day}T00:00:00Z`);
  return Number.isNaN(ms) ? "" : weekdayFmt.format(new Date(ms));
}

/** "2026-11-30" → "Nov 30" (UTC: usage days are UTC days). */
export function dayLabel(day, long = false) {
  const ms = Date.parse(`${day}T00:00:00Z`);
  if (Number.isNaN(ms)) return day;
  return (long ? longDayFmt : dayFmt).format(new Date(ms));
}

function rowTokens(r) {
  return (Number(r.prompt_tokens) || 0) + (Number(r.completion_tokens) || 0);
}

/**
 * One entry per UTC day from `from` to `to` (days without requests included, as zeros):
 * {day, usd, tokens, requests, estimated}.
 */
export function dailyTotals(usage) {
  const byDay = new Map();
  for (const r of usage?.days || []) {
    const t = byDay.get(r.day) || { usd: 0, tokens: 0, requests: 0, estimated: 0 };
    t.usd += Number(r.usd) || 0;
    t.tokens += rowTokens(r);
    t.requests += Number(r.requests) || 0;
    t.estimated += Number(r.estimated) || 0;
    byDay.set(r.day, t);
  }
  const out = [];
  const start = Date.parse(`${usage?.from}T00:00:00Z`);
  const end = Date.parse(`${usage?.to}T00:00:00Z`);
  if (!Number.isNaN(start) && !Number.isNaN(end) && end >= start && end - start <= 400 * DAY_MS) {
    for (let ms = start; ms <= end; ms += DAY_MS) {
      const day = new Date(ms).toISOString().slice(0, 10);
      out.push({ day, ...(byDay.get(day) || { usd: 0, tokens: 0, requests: 0, estimated: 0 }) });
    }
    return out;
  }
  // No range given: the days that have rows.
  return [...byDay.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([day, t]) => ({ day, ...t }));
}

/** The numbers of one metric: its value, its words, and how its axis is labelled. */
export const METRICS = {
  usd: { label: "Cost", value: (d) => d.usd, words: (v) => money(v), axis: (v) => money(v) },
  tokens: { label: "Tokens", value: (d) => d.tokens, words: (v) => `${count(v)} tokens`, axis: (v) => compact(v) },
};

const compactFmt = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
function compact(v) {
  return compactFmt.format(v);
}

/** A round number at or above `max`, for the top of the axis (1, 2, 2.5, 5 × 10^n). */
export function niceMax(max) {
  if (!(max > 0)) return 1;
  const exp = Math.floor(Math.log10(max));
  const base = 10 ** exp;
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * base >= max) return step * base;
  }
  return 10 * base;
}

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) el.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

let chartCount = 0;

/**
 * The bar chart: one bar per day, `metric` "usd" or "tokens", drawn `width` px wide (the page
 * redraws it when its box changes size, so the text keeps its size on a phone).
 */
export function usageChart(days, { metric = "usd", width = 640, height = 200 } = {}) {
  const m = METRICS[metric] || METRICS.usd;
  const n = ++chartCount;
  const values = days.map((d) => m.value(d));
  const max = Math.max(0, ...values);
  const top = niceMax(max);
  const total = values.reduce((a, b) => a + b, 0);

  const pad = { left: 48, right: 8, top: 12, bottom: 26 };
  const w = Math.max(240, Math.round(width));
  const plotW = w - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const slot = days.length ? plotW / days.length : plotW;
  const barW = Math.max(2, Math.min(28, slot * 0.7));

  const titleId = `usage-chart-title-${n}`;
  const descId = `usage-chart-desc-${n}`;
  const first = days[0]?.day;
  const last = days[days.length - 1]?.day;
  const peak = days[values.indexOf(max)];
  const title = `${m.label} per day${first ? `, ${dayLabel(first)} to ${dayLabel(last)}` : ""}`;
  const desc =
    max > 0
      ? `Total ${m.words(total)}. Highest ${m.words(max)} on ${dayLabel(peak.day, true)}.`
      : "No usage in this period.";

  const root = svg(
    "svg",
    {
      class: "usage-chart",
      width: w,
      height,
      viewBox: `0 0 ${w} ${height}`,
      role: "img",
      "aria-labelledby": `${titleId} ${descId}`,
    },
    svg("title", { id: titleId }, title),
    svg("desc", { id: descId }, desc),
  );
  root.dataset.metric = metric;

  // Grid lines and axis labels at 0, half and the top.
  const grid = svg("g", { class: "chart-grid", "aria-hidden": "true" });
  for (const frac of [0, 0.5, 1]) {
    const y = pad.top + plotH - frac * plotH;
    grid.append(svg("line", { x1: pad.left, x2: w - pad.right, y1: y, y2: y, class: frac === 0 ? "chart-base" : "chart-line" }));
    grid.append(svg("text", { x: pad.left - 6, y: y + 4, class: "chart-axis", "text-anchor": "end" }, m.axis(top * frac)));
  }
  root.append(grid);

  // Bars, each with its own title (a tooltip, and its words for screen readers that read them).
  const bars = svg("g", { class: "chart-bars" });
  days.forEach((d, i) => {
    const v = values[i];
    const x = pad.left + i * slot + (slot - barW) / 2;
    const bh = v > 0 ? Math.max(2, (v / top) * plotH) : 0;
    const words = `${dayLabel(d.day, true)}: ${m.words(v)}, ${count(d.requests)} ${d.requests === 1 ? "request" : "requests"}${
      d.estimated ? " (some estimated)" : ""
    }`;
    // An invisible full-height target keeps the tooltip reachable on days with tiny bars.
    bars.append(
      svg(
        "g",
        { class: "chart-day", "data-day": d.day },
        svg("title", {}, words),
        svg("rect", { x: pad.left + i * slot, y: pad.top, width: slot, height: plotH, class: "chart-hit" }),
        bh ? svg("rect", { x, y: pad.top + plotH - bh, width: barW, height: bh, rx: Math.min(3, barW / 3), class: "chart-bar" }) : null,
      ),
    );
  });
  root.append(bars);

  // Day labels: as many as fit without touching (about one per 56 px), always the last day.
  const labels = svg("g", { class: "chart-days", "aria-hidden": "true" });
  const every = Math.max(1, Math.ceil(56 / slot));
  days.forEach((d, i) => {
    const lastOne = i === days.length - 1;
    if (!lastOne && (i % every !== 0 || days.length - 1 - i < every)) return;
    const x = pad.left + i * slot + slot / 2;
    labels.append(
      svg("text", { x, y: height - 8, class: "chart-axis", "text-anchor": lastOne ? "end" : i === 0 ? "start" : "middle" }, dayLabel(d.day)),
    );
  });
  root.append(labels);
  return root;
}

/**
 * The table: one row per day and model, newest day first. `caption` names the app.
 */
export function usageTable(usage, caption) {
  const rows = [...(usage?.days || [])]
    .filter((r) => (Number(r.requests) || 0) > 0 || (Number(r.usd) || 0) > 0)
    .sort((a, b) => b.day.localeCompare(a.day) || String(a.model).localeCompare(String(b.model)));
  if (!rows.length) return h("p", { class: "muted small usage-none" }, "No requests in this period.");
  const anyEstimated = rows.some((r) => Number(r.estimated) > 0);
  const body = rows.map((r) =>
    h(
      "tr",
      {},
      h(
        "th",
        { scope: "row" },
        // The weekday is left out on a phone (CSS), to keep four columns in its width.
        h("time", { datetime: r.day }, h("span", { class: "weekday" }, `${weekday(r.day)}, `), dayLabel(r.day)),
        // On a phone the model column is hidden and the model shows under the day.
        h("span", { class: "chip model-inline", "aria-hidden": "true" }, r.model || "—"),
      ),
      h("td", { class: "col-model" }, h("span", { class: "chip" }, r.model || "—")),
      h(
        "td",
        { class: "num" },
        count(r.requests),
        Number(r.errors) > 0 ? h("span", { class: "faint small failed-note" }, ` (${count(r.errors)} failed)`) : null,
      ),
      h(
        "td",
        { class: "num col-tokens", title: `${count(r.prompt_tokens)} in (${count(r.cached_tokens)} cached), ${count(r.completion_tokens)} out` },
        count(rowTokens(r)),
        Number(r.estimated) > 0 ? h("span", { class: "estimated", "aria-label": " (partly estimated)" }, "*") : null,
      ),
      h("td", { class: "num" }, money(r.usd)),
    ),
  );
  return h(
    "div",
    { class: "usage-table-wrap" },
    h(
      "table",
      { class: "usage-table" },
      h("caption", { class: "visually-hidden" }, caption),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Day", "Model", "Requests", "Tokens", "Cost"].map((t, i) =>
            h("th", { scope: "col", class: [i >= 2 ? "num" : null, i === 1 ? "col-model" : null, i === 3 ? "col-tokens" : null].filter(Boolean).join(" ") || null }, t),
          ),
        ),
      ),
      h("tbody", {}, body),
    ),
    anyEstimated
      ? h("p", { class: "hint" }, "* Partly estimated: a stream that ended early is counted for what was sent.")
      : null,
  );
}
