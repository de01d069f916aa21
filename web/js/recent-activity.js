// The dashboard's "Recent activity": the person's own audit log (GET /api/audit), newest
// first, each entry in plain words ("You created the app key “CLI”", "You signed in from
// 203.0.113.9") with when it happened. describeEntry is pure, so Node can test the words.

import { h, icon, replace, showMessage, timeEl } from "./dom.js";

/** Entries shown at first; "Show more" adds twice as many each time. */
export const PAGE = 10;

/** What a changed field is called in a sentence. */
const FIELD_WORDS = {
  name: "name",
  models: "models",
  scopes: "permissions",
  limits: "limits",
  expires_at: "expiry",
  plan: "plan",
};

/** Who did it, as the sentence's subject. */
function subject(entry) {
  switch (entry?.actor?.kind) {
    case "person":
      return "You";
    case "admin_key":
      return "An administrator";
    default:
      return "keygate";
  }
}

const quoted = (name) => `“${name}”`;

/** `names` as English: "a", "a and b", "a, b and c". */
function listWords(names) {
  if (names.length <= 1) return names.join("");
  return `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]}`;
}

/**
 * One entry in words: {icon, text} — the icon's name in /img/icons.svg and the sentence
 * (without the time or the address, which the list shows beside it).
 */
export function describeEntry(entry) {
  const d = entry?.detail || {};
  const who = subject(entry);
  const you = who === "You";
  const app = quoted(d.name || d.app_name || "an app");
  const origin = d.origin ? ` (${d.origin})` : "";
  switch (entry?.action) {
    case "user.signed_up":
      return { icon: "passkey", text: "You created your keygate account" };
    case "user.signed_in":
      return { icon: "logout", text: d.passkey_name ? `You signed in with ${quoted(d.passkey_name)}` : "You signed in" };
    case "user.created":
      return { icon: "plus", text: "An administrator created your account" };
    case "passkey.added":
      return { icon: "passkey", text: `${who} added the passkey ${quoted(d.name || "Passkey")}` };
    case "passkey.removed": {
      const ended = Number(d.sessions_ended) || 0;
      const others = ended ? ` and signed out ${ended === 1 ? "1 other device" : `${ended} other devices`}` : "";
      return { icon: "trash", text: `${who} removed the passkey ${quoted(d.name || "Passkey")}${others}` };
    }
    case "key.stored":
      return {
        icon: "key",
        text: `${who} stored ${you ? "your" : "an"} OpenAI key${you ? "" : " for you"}${d.last4 ? ` (ending in ${d.last4})` : ""}`,
      };
    case "key.replaced":
      return { icon: "refresh", text: `${who} replaced your OpenAI key${d.last4 ? ` (now ending in ${d.last4})` : ""}` };
    case "key.deleted":
      return { icon: "trash", text: `${who} deleted your OpenAI key` };
    case "grant.created":
      return d.origin
        ? { icon: "apps", text: `${quoted(d.name || "An app")}${origin} received its app key` }
        : { icon: "plus", text: `${who} created the app key ${app}` };
    case "grant.changed": {
      const fields = (Array.isArray(d.fields) ? d.fields : []).map((f) => FIELD_WORDS[f] || f);
      return { icon: "sliders", text: `${who} changed ${app}${fields.length ? `: ${listWords(fields)}` : ""}` };
    }
    case "grant.rotated":
      return d.reconnect
        ? { icon: "refresh", text: `${app} reconnected and got a new key` }
        : { icon: "refresh", text: `${who} issued a new key for ${app}` };
    case "grant.disabled":
      return { icon: "pause", text: `${who} disabled ${app}` };
    case "grant.enabled":
      return { icon: "check", text: `${who} enabled ${app} again` };
    case "grant.revoked":
      return { icon: "x", text: `${who} revoked ${app}` };
    case "grant.removed":
      return { icon: "trash", text: `${who} removed the revoked key ${app} from the list` };
    case "connect.approved":
      return { icon: "check", text: `${who} approved ${app}${origin}` };
    case "connect.denied":
      return { icon: "x", text: `${who} turned down ${app}${origin}` };
    case "account.deleted":
      return { icon: "user-x", text: `${who} deleted the account` };
    default:
      return { icon: "info", text: `${who}: ${entry?.action || "something happened"}` };
  }
}

/** Unix seconds of an entry's RFC 3339 `at` (null when unreadable). */
export function entrySeconds(entry) {
  const ms = Date.parse(entry?.at || "");
  return Number.isNaN(ms) ? null : Math.floor(ms / 1000);
}

/**
 * The section's behaviour: `list` (a <ul>), `msg` (a live region), `more` (the "Show
 * more" button); `get(path)` is api.get. Returns {load}, which (re)reads the newest
 * entries; the section shows what the server says, never more.
 */
export function createRecentActivity({ list, msg, more, get }) {
  let shown = PAGE;

  async function load() {
    let entries;
    try {
      // One more than shown: whether there is anything older to offer.
      entries = await get(`/api/audit?limit=${shown + 1}`);
    } catch (err) {
      showMessage(msg, "error", `Recent activity couldn't be loaded: ${err.message}`);
      return;
    }
    showMessage(msg, "", "");
    const all = Array.isArray(entries) ? entries : [];
    const visible = all.slice(0, shown);
    more.hidden = all.length <= shown;
    if (!visible.length) {
      replace(list, h("li", { class: "item activity-empty" }, h("span", { class: "item-meta" }, "Nothing yet.")));
      return;
    }
    replace(list, visible.map(item));
  }

  more.addEventListener("click", async () => {
    shown = Math.min(shown + PAGE * 2, 999);
    more.disabled = true;
    try {
      await load();
    } finally {
      more.disabled = false;
    }
  });

  return { load };
}

function item(entry) {
  const { icon: name, text } = describeEntry(entry);
  const seconds = entrySeconds(entry);
  const from = entry.source_ip ? ` · from ${entry.source_ip}` : "";
  return h(
    "li",
    { class: "item activity-item", dataset: { action: entry.action || "" } },
    h("span", { class: "item-icon" }, icon(name)),
    h(
      "div",
      { class: "item-main" },
      h("div", { class: "activity-text" }, text),
      h("div", { class: "item-meta" }, seconds === null ? "" : timeEl(seconds, { relative: true }), from),
    ),
  );
}
