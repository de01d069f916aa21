// Small DOM helpers shared by keygate's pages. Everything is built with DOM APIs (never
// innerHTML), so names coming from the server are always text, never markup.

const SVG_NS = "http://www.w3.org/2000/svg";

/**
 * Creates an element: h("button", {class: "btn", onclick: fn}, "Save").
 * Attributes named on* become listeners; `hidden`/`disabled` take booleans; `dataset`
 * takes an object; null/undefined/false attributes and children are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** An icon from the sprite at /img/icons.svg, hidden from assistive technology. */
export function icon(name, extraClass = "") {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("class", `icon ${extraClass}`.trim());
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const use = document.createElementNS(SVG_NS, "use");
  use.setAttribute("href", `/img/icons.svg#${name}`);
  svg.append(use);
  return svg;
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

export function $(selector, root = document) {
  const el = root.querySelector(selector);
  if (!el) throw new Error(`keygate page is missing ${selector}`);
  return el;
}

/**
 * Shows a message in a live region (an element with aria-live): kind is "error", "info",
 * "success" or "warning". An empty message clears it.
 */
export function showMessage(region, kind, message) {
  if (!message) {
    region.replaceChildren();
    return;
  }
  const icons = { error: "alert", info: "info", success: "check", warning: "warning" };
  region.replaceChildren(
    h("div", { class: `alert alert-${kind}` }, icon(icons[kind] || "info"), h("span", {}, message)),
  );
}

/**
 * Marks a button busy while `work` runs (spinner, aria-busy, disabled), and restores it.
 * Returns work's result.
 */
export async function busy(button, work) {
  if (!button) return work();
  button.setAttribute("aria-busy", "true");
  button.disabled = true;
  try {
    return await work();
  } finally {
    button.removeAttribute("aria-busy");
    button.disabled = false;
  }
}

const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
const dateTimeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const relFmt = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

/**
 * A `<time>` for a unix-seconds timestamp: a date, with the full date and time as title.
 * relative: "Just now", "3 hours ago"… for recent times; midSentence: without the capital.
 */
export function timeEl(seconds, { relative = false, never = "Never", midSentence = false } = {}) {
  if (seconds === null || seconds === undefined) return h("span", { class: "faint" }, never);
  const date = new Date(seconds * 1000);
  let text = relative ? relativeText(date) : dateFmt.format(date);
  if (relative && midSentence && text !== dateFmt.format(date)) text = text.charAt(0).toLowerCase() + text.slice(1);
  return h("time", { datetime: date.toISOString(), title: dateTimeFmt.format(date) }, text);
}

export function formatDate(seconds) {
  return dateFmt.format(new Date(seconds * 1000));
}

function relativeText(date) {
  const diff = (date.getTime() - Date.now()) / 1000;
  const abs = Math.abs(diff);
  if (abs < 45) return "Just now";
  if (abs < 3600) return capital(relFmt.format(Math.round(diff / 60), "minute"));
  if (abs < 86400) return capital(relFmt.format(Math.round(diff / 3600), "hour"));
  if (abs < 7 * 86400) return capital(relFmt.format(Math.round(diff / 86400), "day"));
  return dateFmt.format(date);
}

function capital(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** A number field for a limit: whole numbers unless `step` says otherwise, empty for none. */
export function numberInput(id, value, { max = null, step = "1", min = "1" } = {}) {
  return h("input", {
    id,
    type: "number",
    inputmode: step === "1" ? "numeric" : "decimal",
    min,
    step,
    max: max ?? null,
    value: value ?? "",
    autocomplete: "off",
  });
}
