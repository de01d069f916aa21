// The dashboard: the person's OpenAI key, their apps' keys (grants), their passkeys, the
// devices they're signed in on, their recent activity (recent-activity.js), and account
// deletion. Every change goes through api.js, which handles an expired session and the
// passkey step-up for sensitive changes.

import { api, goToLogin } from "./api.js";
import { describeAgent } from "./devices.js";
import { $, busy, formatDate, h, icon, replace, showMessage, timeEl } from "./dom.js";
import { createGrantDetail, removeGrant } from "./grant-detail.js";
import { capitalize, cleanLimits, expiryWords, isExpired, limitPhrases, toMillis } from "./limits.js";
import { addPasskey } from "./passkey.js";
import { createRecentActivity } from "./recent-activity.js";
import { DEFAULT_SCOPES, SCOPES, scope, sortScopes } from "./scopes.js";
import { LANGUAGES, highlight, snippetsFor } from "./snippets.js";
import { confirmDialog, toast } from "./ui.js";

/** Set by the sign-in page (login.js) just before it opens the dashboard. */
const JUST_SIGNED_IN = "keygate.justSignedIn";

// sessions: null when this keygate has no sessions API (the section stays hidden).
const state = { me: null, key: null, grants: [], passkeys: [], sessions: null };

const el = {
  loading: $("#loading"),
  loadError: $("#load-error"),
  content: $("#content"),
  account: $("#account"),
  avatar: $("#avatar"),
  userName: $("#user-name"),
  signout: $("#signout"),
  greeting: $("#greeting"),
  banners: $("#banners"),
  // key
  keyMsg: $("#key-msg"),
  keyStatus: $("#key-status"),
  keyLast4: $("#key-last4"),
  keyCreated: $("#key-created"),
  keyCheck: $("#key-check"),
  keySection: $("#key-section"),
  keyReplace: $("#key-replace"),
  keyDelete: $("#key-delete"),
  keyForm: $("#key-form"),
  keyFormMsg: $("#key-form-msg"),
  keyFormTitle: $("#key-form-title"),
  keyGuide: $("#key-guide"),
  keyInput: $("#openai-key"),
  keySave: $("#key-save"),
  keyCancel: $("#key-cancel"),
  // grants
  grantsMsg: $("#grants-msg"),
  grantNew: $("#grant-new"),
  grantForm: $("#grant-form"),
  grantName: $("#grant-name"),
  grantModels: $("#grant-models"),
  grantScopes: $("#grant-scopes"),
  grantScopesList: $("#grant-scopes-list"),
  grantBudget: $("#grant-budget"),
  grantBudgetPeriod: $("#grant-budget-period"),
  grantRpm: $("#grant-rpm"),
  grantExpiry: $("#grant-expiry"),
  grantCreate: $("#grant-create"),
  grantCancel: $("#grant-cancel"),
  newKey: $("#new-key"),
  newKeyHeading: $("#new-key-heading"),
  newKeyNote: $("#new-key-note"),
  newKeyNoteText: $("#new-key-note-text"),
  newKeyValue: $("#new-key-value"),
  newKeyBase: $("#new-key-base"),
  newKeySnippet: $("#new-key-snippet"),
  newKeySnippetPanel: $("#new-key-snippet-panel"),
  snippetTabs: $("#snippet-tabs"),
  newKeyDone: $("#new-key-done"),
  grantsList: $("#grants-list"),
  grantDetail: $("#grant-detail"),
  // passkeys
  passkeysMsg: $("#passkeys-msg"),
  passkeysList: $("#passkeys-list"),
  passkeyForm: $("#passkey-form"),
  passkeyName: $("#passkey-name"),
  passkeyAdd: $("#passkey-add"),
  // sessions
  sessionsSection: $("#sessions-section"),
  sessionsMsg: $("#sessions-msg"),
  sessionsList: $("#sessions-list"),
  sessionsRevokeOthers: $("#sessions-revoke-others"),
  // recent activity
  activityList: $("#activity-list"),
  activityMsg: $("#activity-msg"),
  activityMore: $("#activity-more"),
  // danger
  dangerMsg: $("#danger-msg"),
  accountDelete: $("#account-delete"),
};

// ---------------------------------------------------------------- loading

async function load() {
  try {
    // Not signed in at all (rather than an expired session): go to sign in, without a note.
    const me = await api.get("/api/me", { redirectOn401: false }).catch((err) => {
      if (err.status === 401) {
        goToLogin();
        return new Promise(() => {});
      }
      throw err;
    });
    const [key, grants, passkeys, sessions] = await Promise.all([
      api.get("/api/key"),
      api.get("/api/grants"),
      api.get("/api/passkeys"),
      loadSessions(),
    ]);
    Object.assign(state, { me, key, grants: grants || [], passkeys: passkeys || [], sessions });
  } catch (err) {
    el.loading.hidden = true;
    showMessage(el.loadError, "error", `Your vault couldn't be loaded: ${err.message}`);
    const retry = h("button", { class: "btn", type: "button" }, icon("refresh"), "Try again");
    retry.addEventListener("click", () => window.location.reload());
    el.loadError.append(retry);
    return;
  }
  renderAccount();
  renderKey();
  renderGrants();
  renderPasskeys();
  renderSessions();
  renderBanners();
  el.loading.hidden = true;
  el.content.hidden = false;
  activity.load();
}

/** The person's sessions, or null when this keygate has no sessions API. */
async function loadSessions() {
  try {
    const list = await api.get("/api/sessions");
    return Array.isArray(list) ? list : null;
  } catch (err) {
    if (err.status === 404 || err.status === 405) return null;
    throw err;
  }
}

async function refresh(what) {
  // Whatever changed left an entry in the person's activity (errors are said there).
  activity.load();
  const paths = { key: "/api/key", grants: "/api/grants", passkeys: "/api/passkeys" };
  // (sessions: loadSessions, which tolerates a keygate without the sessions API)
  state[what] = what === "sessions" ? await loadSessions() : await api.get(paths[what]);
  if (what === "key") {
    renderKey();
    renderGrants(); // the "store your key first" hint depends on it
    renderBanners();
  }
  if (what === "grants") {
    renderGrants();
    detail.update(state.grants);
  }
  if (what === "passkeys") renderPasskeys();
  if (what === "sessions") {
    renderSessions();
    renderBanners();
  }
}

// ---------------------------------------------------------------- banners

// Shown once, right after signing in, when other devices are signed in too.
let offerSignOutOthers = false;
try {
  offerSignOutOthers = window.sessionStorage.getItem(JUST_SIGNED_IN) === "1";
  window.sessionStorage.removeItem(JUST_SIGNED_IN);
} catch {
  // storage blocked: no offer, the devices list still has the button
}

function renderBanners() {
  const parts = [];
  if (keyStatus() === "rejected") {
    const when = state.key.rejected_at ? ` on ${formatDate(state.key.rejected_at)}` : "";
    parts.push(
      banner(
        "error",
        "key-rejected-banner",
        "OpenAI refused your stored key",
        `OpenAI refused the key ending in ${state.key.last4 || "…"}${when}; apps using keygate get an error until you replace it.`,
        // While the key form is open its own button replaces the key: one "Replace key" at a time.
        replacing ? null : h("button", { class: "btn btn-sm btn-danger", type: "button", onclick: startReplacing }, icon("refresh"), "Replace key"),
      ),
    );
  }
  const others = otherSessions();
  if (offerSignOutOthers && others.length) {
    const n = others.length;
    parts.push(
      banner(
        "info",
        "other-sessions-banner",
        `You’re also signed in on ${n === 1 ? "another device" : `${n} other devices`}`,
        "If you don’t recognise them, or you used a computer that isn’t yours, sign out everywhere else. This device stays signed in.",
        h("button", { class: "btn btn-sm", type: "button", onclick: (e) => revokeOthers(e.currentTarget) }, icon("logout"), "Sign out everywhere else"),
        h(
          "button",
          {
            class: "btn btn-sm btn-ghost",
            type: "button",
            onclick: () => {
              offerSignOutOthers = false;
              renderBanners();
            },
          },
          "Keep them",
        ),
      ),
    );
  }
  replace(el.banners, parts);
}

function banner(kind, id, title, text, ...actions) {
  return h(
    "div",
    { class: `alert alert-${kind} banner`, id, role: kind === "error" ? "alert" : null },
    icon(kind === "error" ? "alert" : "info"),
    h("div", { class: "banner-main" }, h("strong", { class: "banner-title" }, title), h("p", {}, text)),
    h("div", { class: "banner-actions" }, actions),
  );
}

// ---------------------------------------------------------------- account

function renderAccount() {
  const name = state.me?.name || "You";
  el.userName.textContent = name;
  el.userName.title = name;
  el.avatar.textContent = initials(name);
  el.account.hidden = false;
  const first = name.split(/\s+/)[0];
  el.greeting.textContent = `Welcome, ${first}`;
}

function initials(name) {
  const parts = name.trim().split(/\s+/).filter(Boolean);
  const letters = parts.length > 1 ? parts[0][0] + parts[parts.length - 1][0] : (parts[0] || "?").slice(0, 1);
  return letters.toUpperCase();
}

el.signout.addEventListener("click", () =>
  busy(el.signout, async () => {
    try {
      await api.post("/api/auth/logout", {});
    } catch (err) {
      toast(err.message, "error");
      return;
    }
    goToLogin("signed-out");
  }),
);

// ---------------------------------------------------------------- OpenAI key

let replacing = false;

/**
 * "none", "unverified", "verified" or "rejected" — or null when this keygate doesn't say
 * (then the page claims nothing about whether OpenAI checked the key).
 */
function keyStatus() {
  if (!state.key?.enrolled) return "none";
  const status = state.key.status;
  return ["unverified", "verified", "rejected"].includes(status) ? status : null;
}

function renderKey() {
  const enrolled = Boolean(state.key?.enrolled);
  el.keyStatus.hidden = !enrolled || replacing;
  el.keyForm.hidden = enrolled && !replacing;
  if (enrolled) {
    el.keyLast4.textContent = `••••${state.key.last4 || ""}`;
    el.keyCreated.textContent = state.key.created_at
      ? `Stored ${formatDate(state.key.created_at)} · sealed in the vault`
      : "Sealed in the vault";
    renderKeyCheck();
  }
  el.keyFormTitle.textContent = replacing ? "Replace your OpenAI key" : "Store your OpenAI key";
  el.keySave.textContent = replacing ? "Replace key" : "Store key";
  el.keyCancel.hidden = !replacing;
}

/** What keygate knows about OpenAI's view of the key; never more than it knows. */
function renderKeyCheck() {
  const status = keyStatus();
  const line = el.keyCheck;
  line.className = "key-check small";
  if (status === "verified") {
    const when = state.key.last_validated_at ? ` on ${formatDate(state.key.last_validated_at)}` : "";
    replace(line, icon("check"), h("span", {}, `Verified: OpenAI accepted it${when}`));
    line.classList.add("is-ok");
  } else if (status === "unverified") {
    replace(
      line,
      icon("info"),
      h("span", {}, "Stored, not yet verified: OpenAI hasn’t confirmed this key yet. keygate checks it the first time an app uses it."),
    );
    line.classList.add("is-pending");
  } else if (status === "rejected") {
    const when = state.key.rejected_at ? ` on ${formatDate(state.key.rejected_at)}` : "";
    replace(line, icon("alert"), h("span", {}, `OpenAI refused this key${when}. Replace it to get your apps working again.`));
    line.classList.add("is-bad");
  }
  line.hidden = !status || status === "none";
}

function startReplacing() {
  replacing = true;
  showMessage(el.keyMsg, "", "");
  renderKey();
  renderBanners();
  el.keySection.scrollIntoView({ block: "start" });
  el.keyInput.focus({ preventScroll: true });
}

el.keyReplace.addEventListener("click", startReplacing);

el.keyCancel.addEventListener("click", () => {
  replacing = false;
  el.keyInput.value = "";
  el.keyInput.removeAttribute("aria-invalid");
  showMessage(el.keyMsg, "", "");
  showMessage(el.keyFormMsg, "", "");
  renderKey();
  renderBanners();
  el.keyReplace.focus();
});

el.keyForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  showMessage(el.keyMsg, "", "");
  showMessage(el.keyFormMsg, "", "");
  const value = el.keyInput.value.trim();
  if (!value) return invalidKey("Paste your OpenAI API key first.");
  if (!value.startsWith("sk-")) {
    return invalidKey("That doesn’t look like an OpenAI API key: they start with “sk-”.");
  }
  if (/\s/.test(value)) return invalidKey("The key shouldn’t contain spaces. Copy it again from OpenAI.");
  el.keyInput.removeAttribute("aria-invalid");
  const wasReplacing = Boolean(state.key?.enrolled);
  const stepUpMessage = wasReplacing
    ? "Replacing your OpenAI key changes what every app’s requests are paid with, so keygate asks for your passkey once more."
    : "Storing your OpenAI key lets apps you approve spend on your OpenAI account, so keygate asks for your passkey once more.";
  try {
    await busy(el.keySave, () => api.put("/api/key", { api_key: value }, { stepUpMessage }));
  } catch (err) {
    if (err.code === "key_rejected" || err.param === "api_key") {
      return invalidKey(err.message);
    }
    showMessage(el.keyFormMsg, "error", err.message);
    return;
  }
  el.keyInput.value = "";
  replacing = false;
  await refreshSafely("key", el.keyMsg);
  toast(storedMessage(wasReplacing));
  el.keyReplace.focus();
});

/** The toast after storing a key: says whether OpenAI checked it, and only if it did. */
function storedMessage(wasReplacing) {
  const stored = wasReplacing ? "Your new OpenAI key is stored" : "Your OpenAI key is stored and sealed";
  switch (keyStatus()) {
    case "verified":
      return `${stored}. OpenAI accepted it.`;
    case "unverified":
      return `${stored}, not yet verified: keygate checks it with OpenAI the first time an app uses it.`;
    default:
      return `${stored}.`;
  }
}

function invalidKey(message) {
  el.keyInput.setAttribute("aria-invalid", "true");
  showMessage(el.keyFormMsg, "error", message);
  el.keyInput.focus();
}

el.keyDelete.addEventListener("click", () =>
  confirmDialog({
    title: "Delete your OpenAI key?",
    message:
      "keygate forgets your OpenAI key. Your apps’ keys stay, but their requests fail until you store a key again.",
    confirmLabel: "Delete key",
    danger: true,
    iconName: "trash",
    action: async () => {
      await api.del("/api/key", {
        stepUpMessage: "Deleting your OpenAI key stops every app at once, so keygate asks for your passkey once more.",
      });
      await refresh("key");
      toast("Your OpenAI key was deleted.");
    },
  }),
);

// ---------------------------------------------------------------- grants

/** The scope checkboxes of the new-key form: models only by default. */
function renderScopeChoices() {
  replace(
    el.grantScopesList,
    h(
      "div",
      { class: "scope-checks" },
      SCOPES.map((s) => {
        const id = `grant-scope-${s.id}`;
        return h(
          "label",
          { class: "scope-check", for: id },
          h("input", { type: "checkbox", id, name: "scope", value: s.id, checked: DEFAULT_SCOPES.includes(s.id) }),
          h("span", { class: "scope-text" }, h("span", { class: "scope-label" }, s.label), h("span", { class: "scope-words" }, s.words)),
        );
      }),
    ),
  );
}
renderScopeChoices();
el.grantScopesList.addEventListener("change", () => showMessage(el.grantsMsg, "", ""));

function pickedScopes() {
  return sortScopes([...el.grantScopesList.querySelectorAll("input[name=scope]:checked")].map((i) => i.value));
}

function openGrantForm(open) {
  el.grantForm.hidden = !open;
  el.grantNew.setAttribute("aria-expanded", String(open));
  if (open) {
    el.newKey.hidden = true;
    el.grantName.focus();
  } else {
    el.grantForm.reset();
    el.grantName.removeAttribute("aria-invalid");
  }
}

el.grantNew.addEventListener("click", () => {
  showMessage(el.grantsMsg, "", "");
  openGrantForm(el.grantForm.hidden);
});
el.grantCancel.addEventListener("click", () => {
  openGrantForm(false);
  el.grantNew.focus();
});

el.grantForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  showMessage(el.grantsMsg, "", "");
  const name = el.grantName.value.trim();
  if (!name) {
    el.grantName.setAttribute("aria-invalid", "true");
    showMessage(el.grantsMsg, "error", "Give the key a name, such as the app that will use it.");
    el.grantName.focus();
    return;
  }
  el.grantName.removeAttribute("aria-invalid");
  const models = el.grantModels.value
    .split(/[,\s]+/)
    .map((m) => m.trim())
    .filter(Boolean);
  const scopes = pickedScopes();
  if (!scopes.length) {
    showMessage(el.grantsMsg, "error", "Choose at least one thing the app may do.");
    el.grantScopesList.querySelector("input")?.focus();
    return;
  }
  const body = { name, scopes };
  if (models.length) body.models = models;
  // Optional limits and expiry (keygate checks them again; its message names the field).
  const numbers = {};
  for (const [key, input, integer] of [
    ["usd", el.grantBudget, false],
    ["rpm", el.grantRpm, true],
  ]) {
    const raw = input.value.trim();
    input.removeAttribute("aria-invalid");
    if (!raw) continue;
    const v = Number(raw);
    if (!Number.isFinite(v) || v <= 0 || (integer && !Number.isInteger(v))) {
      input.setAttribute("aria-invalid", "true");
      showMessage(el.grantsMsg, "error", integer ? "Requests a minute: enter a whole number above zero, or leave it empty." : "Budget: enter an amount above zero, or leave it empty.");
      input.focus();
      return;
    }
    numbers[key] = v;
  }
  const limits = cleanLimits({
    rpm: numbers.rpm ?? null,
    budget: numbers.usd ? { usd: numbers.usd, period: el.grantBudgetPeriod.value } : null,
  });
  if (limits) body.limits = limits;
  const expiresIn = Number(el.grantExpiry.value);
  if (expiresIn > 0) body.expires_at = new Date(Date.now() + expiresIn * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
  let created;
  try {
    created = await busy(el.grantCreate, () =>
      api.post("/api/grants", body, {
        stepUpMessage:
          "A new key lets an app spend on your OpenAI account, so keygate asks for your passkey once more before creating it.",
      }),
    );
  } catch (err) {
    showMessage(el.grantsMsg, "error", err.message);
    return;
  }
  openGrantForm(false);
  showNewKey(created);
  await refreshSafely("grants", el.grantsMsg);
});

/** The new key's snippets while the reveal panel is open: {js, python, curl}; null after. */
let revealed = null;
let snippetLang = "js";

/** Shows a key once (a new one, or a rotated one with `note` saying until when the old one works). */
function showNewKey(created, { note = null, heading = null } = {}) {
  const apiKey = created.api_key;
  const baseURL = created.base_url;
  const name = created.grant?.name;
  el.newKeyHeading.textContent = heading || (name ? `Your new key for “${name}” is ready` : "Your new key is ready");
  el.newKeyNote.hidden = !note;
  el.newKeyNoteText.textContent = note || "";
  el.newKeyValue.textContent = apiKey;
  el.newKeyBase.textContent = baseURL;
  revealed = snippetsFor(apiKey, baseURL, created.grant);
  showSnippet(snippetLang);
  el.newKey.hidden = false;
  el.newKey.focus();
}

function showSnippet(lang) {
  snippetLang = lang;
  for (const tab of el.snippetTabs.querySelectorAll("[role=tab]")) {
    const selected = tab.dataset.lang === lang;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    if (selected) el.newKeySnippetPanel.setAttribute("aria-labelledby", tab.id);
  }
  replace(el.newKeySnippet, revealed ? highlight(revealed[lang]) : []);
}

const TAB_ORDER = LANGUAGES.map((l) => l.id);
for (const tab of el.snippetTabs.querySelectorAll("[role=tab]")) {
  tab.addEventListener("click", () => showSnippet(tab.dataset.lang));
  // Arrow keys move between the tabs (the ARIA tabs pattern).
  tab.addEventListener("keydown", (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (!step) return;
    event.preventDefault();
    const i = TAB_ORDER.indexOf(snippetLang);
    const next = TAB_ORDER[(i + step + TAB_ORDER.length) % TAB_ORDER.length];
    showSnippet(next);
    el.snippetTabs.querySelector(`[data-lang="${next}"]`)?.focus();
  });
}

el.newKeyDone.addEventListener("click", () => {
  // Forget the secret: it is not kept anywhere on the page once dismissed.
  el.newKey.hidden = true;
  el.newKeyNote.hidden = true;
  el.newKeyValue.textContent = "";
  el.newKeySnippet.replaceChildren();
  revealed = null;
  el.grantNew.focus();
});

for (const button of el.newKey.querySelectorAll("[data-copy]")) {
  button.addEventListener("click", () => {
    const target = document.getElementById(button.dataset.copy);
    const text = target === el.newKeySnippet ? revealed?.[snippetLang] || "" : target.textContent;
    copy(text, button, target);
  });
}

async function copy(text, button, target) {
  const label = button.querySelector("span");
  try {
    await navigator.clipboard.writeText(text);
    if (label) label.textContent = "Copied";
    button.classList.add("is-copied");
    setTimeout(() => {
      if (label) label.textContent = "Copy";
      button.classList.remove("is-copied");
    }, 2000);
  } catch {
    // No clipboard access: select the text so Ctrl+C / long-press copies it.
    const range = document.createRange();
    range.selectNodeContents(target);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    toast("Your browser blocked copying: the text is selected, press Ctrl+C (⌘C) to copy it.", "error");
  }
}

const STATE_LABELS = { active: "Active", revoked: "Revoked", disabled: "Disabled" };
const STATE_RANK = { active: 0, disabled: 1, revoked: 2 };

// One app's panel under the list: limits, usage, rotation, disable/enable (grant-detail.js).
const detail = createGrantDetail({
  container: el.grantDetail,
  onChanged: () => refreshSafely("grants", el.grantsMsg),
  showNewKey,
});

function renderGrants() {
  const grants = [...(state.grants || [])].sort((a, b) => {
    const rank = (g) => STATE_RANK[g.state] ?? 3;
    return rank(a) - rank(b) || (b.created_at || 0) - (a.created_at || 0);
  });

  const parts = [];
  if (!state.key?.enrolled) {
    parts.push(
      h(
        "div",
        { class: "alert alert-info" },
        icon("info"),
        h("span", {}, "Store your OpenAI key above first: app keys only work once it’s in the vault."),
      ),
    );
  }

  if (!grants.length) {
    parts.push(
      h(
        "div",
        { class: "empty" },
        icon("apps"),
        h("strong", {}, "No app keys yet"),
        h("span", {}, "Create one for each app or script that should use your OpenAI key."),
      ),
    );
    replace(el.grantsList, parts);
    return;
  }

  const head = h(
    "thead",
    {},
    h(
      "tr",
      {},
      ["App", "Models", "Limits", "Expires", "Last used", "Status"].map((t) => h("th", { scope: "col" }, t)),
      h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")),
    ),
  );
  const rows = grants.map((g) => grantRow(g));
  parts.push(
    h(
      "div",
      { class: "table-wrap" },
      h("table", { class: "data grants-table", id: "grants-table" }, h("caption", { class: "visually-hidden" }, "Your app keys"), head, h("tbody", {}, rows)),
    ),
  );
  replace(el.grantsList, parts);
}

/** The expiry cell: "In 30 days" (the date on hover), "Never", or "Expired 2 days ago". */
function expiryCell(g) {
  // A revoked key no longer works at all: its expiry says nothing.
  if (g.state === "revoked") return h("span", { class: "faint" }, h("span", { "aria-hidden": "true" }, "—"), h("span", { class: "visually-hidden" }, "Revoked"));
  const ms = toMillis(g.expires_at);
  if (ms === null) return h("span", { class: "faint" }, "Never");
  const date = new Date(ms);
  const words = capitalize(expiryWords(ms).replace(/^expires /, ""));
  return h(
    "time",
    { datetime: date.toISOString(), title: formatDate(ms / 1000), class: isExpired(ms) ? "is-expired" : null },
    words,
  );
}

function grantRow(g) {
  const active = g.state === "active";
  const revoked = g.state === "revoked";
  const expired = !revoked && isExpired(g.expires_at);
  const models =
    Array.isArray(g.models) && g.models.length
      ? h("div", { class: "chips" }, g.models.map((m) => h("span", { class: "chip" }, m)))
      : h("span", { class: "muted" }, "All models");
  // A connected app is bound to its website: shown under its name.
  const origin = g.origin ? h("span", { class: "origin grant-origin", title: "Only this website may use the key" }, g.origin) : null;
  // What it may do, in words (a keygate without scopes sends none: then nothing is claimed).
  let access = null;
  if (Array.isArray(g.scopes)) {
    const known = sortScopes(g.scopes);
    access = h(
      "ul",
      { class: "scope-list", "aria-label": `What ${g.name} may do` },
      known.map((id) => h("li", {}, scope(id).words)),
    );
  }
  const phrases = limitPhrases(g.limits);
  const limits = phrases.length
    ? h("ul", { class: "limit-list", "aria-label": `Limits of ${g.name}` }, phrases.map((p) => h("li", {}, capitalize(p))))
    : h("span", { class: "muted" }, "No limits");
  const open = detail.currentId === g.id;
  const actions = h(
    "td",
    { class: "cell-actions" },
    h(
      "div",
      { class: "row-actions" },
      h(
        "button",
        {
          class: "btn btn-sm manage-btn",
          type: "button",
          "aria-label": `${revoked ? "Usage of" : "Manage"} ${g.name}`,
          "aria-controls": "grant-detail",
          "aria-expanded": String(open),
          onclick: () => {
            for (const b of el.grantsList.querySelectorAll(".manage-btn")) b.setAttribute("aria-expanded", "false");
            detail.open(g);
            const row = el.grantsList.querySelector(`tr[data-grant-id="${CSS.escape(g.id)}"] .manage-btn`);
            row?.setAttribute("aria-expanded", "true");
          },
        },
        icon(revoked ? "chart" : "sliders"),
        revoked ? "Usage" : "Manage",
      ),
      revoked
        ? h(
            "button",
            {
              class: "btn btn-sm btn-danger-outline",
              type: "button",
              "aria-label": `Remove ${g.name}`,
              onclick: () => removeGrant(g, { onChanged: () => refresh("grants") }),
            },
            "Remove",
          )
        : h(
            "button",
            {
              class: "btn btn-sm btn-danger-outline",
              type: "button",
              "aria-label": `Revoke ${g.name}`,
              onclick: () => revokeGrant(g),
            },
            "Revoke",
          ),
    ),
  );
  const badge = expired
    ? h("span", { class: "badge badge-revoked" }, "Expired")
    : h("span", { class: `badge badge-${g.state}` }, STATE_LABELS[g.state] || g.state);
  return h(
    "tr",
    { class: active && !expired ? "" : "is-inactive", dataset: { grantId: g.id } },
    h(
      "td",
      { class: "cell-name", "data-label": "Name" },
      h("div", { class: "grant-name" }, g.name),
      origin,
      access,
      h("div", { class: "small faint" }, "Added ", timeEl(g.created_at)),
    ),
    h("td", { "data-label": "Models" }, models),
    h("td", { "data-label": "Limits", class: "cell-limits" }, limits),
    h("td", { "data-label": "Expires" }, expiryCell(g)),
    h("td", { "data-label": "Last used" }, timeEl(g.last_used_at, { relative: true })),
    h("td", { "data-label": "Status" }, badge),
    actions,
  );
}

function revokeGrant(g) {
  // A connected app (it came through "Sign in with OpenAI" and is bound to its website) gets a
  // new key by connecting again from the app; a key made here is replaced by making a new one.
  const message = g.origin
    ? `${g.name} (${g.origin}) loses access to your OpenAI key immediately. This can’t be undone: to use the app again, reconnect from the app itself (its “Sign in with OpenAI” button) and approve it again.`
    : "Apps using this key stop working immediately. This can’t be undone: to reconnect the app, create a new key.";
  return confirmDialog({
    title: `Revoke “${g.name}”?`,
    message,
    confirmLabel: "Revoke key",
    danger: true,
    action: async () => {
      await api.del(`/api/grants/${encodeURIComponent(g.id)}`);
      await refresh("grants");
      toast(`“${g.name}” was revoked.`);
    },
  });
}

// ---------------------------------------------------------------- passkeys

let renaming = null;

function renderPasskeys() {
  const list = state.passkeys || [];
  const only = list.length <= 1;
  replace(
    el.passkeysList,
    list.map((p) => (renaming === p.id ? renameItem(p) : passkeyItem(p, only))),
  );
  if (only) {
    el.passkeysList.append(
      h(
        "li",
        { class: "item" },
        h("p", { class: "small muted" }, "This is your only passkey, so it can’t be removed. Add another as a backup first."),
      ),
    );
  }
}

function passkeyItem(p, only) {
  const name = p.name || "Passkey";
  return h(
    "li",
    { class: "item", dataset: { passkeyId: p.id } },
    h("span", { class: "item-icon" }, icon("passkey")),
    h(
      "div",
      { class: "item-main" },
      h("div", { class: "item-title" }, name),
      h(
        "div",
        { class: "item-meta" },
        "Added ",
        timeEl(p.created_at),
        " · ",
        p.last_used_at ? ["Last used ", timeEl(p.last_used_at, { relative: true, midSentence: true })] : "Not used to sign in yet",
      ),
    ),
    h(
      "div",
      { class: "item-actions" },
      h(
        "button",
        {
          class: "btn btn-sm",
          type: "button",
          "aria-label": `Rename ${name}`,
          onclick: () => {
            renaming = p.id;
            renderPasskeys();
            el.passkeysList.querySelector("input")?.focus();
          },
        },
        icon("pencil"),
        "Rename",
      ),
      h(
        "button",
        {
          class: "btn btn-sm btn-danger-outline",
          type: "button",
          "aria-label": `Remove ${name}`,
          disabled: only,
          title: only ? "Your only passkey can’t be removed" : null,
          onclick: () => removePasskey(p),
        },
        icon("trash"),
        "Remove",
      ),
    ),
  );
}

function renameItem(p) {
  const inputId = `rename-${p.id}`;
  const input = h("input", { id: inputId, type: "text", maxlength: "100", value: p.name || "", autocomplete: "off" });
  const save = h("button", { class: "btn btn-sm btn-primary", type: "submit" }, "Save");
  const cancel = () => {
    renaming = null;
    renderPasskeys();
  };
  const form = h(
    "form",
    { class: "rename-form", novalidate: true },
    h("label", { for: inputId, class: "visually-hidden" }, "New name for this passkey"),
    input,
    save,
    h("button", { class: "btn btn-sm", type: "button", onclick: cancel }, "Cancel"),
  );
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") cancel();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = input.value.trim();
    if (!name) {
      input.setAttribute("aria-invalid", "true");
      showMessage(el.passkeysMsg, "error", "A passkey needs a name.");
      input.focus();
      return;
    }
    try {
      await busy(save, () => api.patch(`/api/passkeys/${encodeURIComponent(p.id)}`, { name }));
    } catch (err) {
      showMessage(el.passkeysMsg, "error", err.message);
      return;
    }
    showMessage(el.passkeysMsg, "", "");
    renaming = null;
    await refreshSafely("passkeys", el.passkeysMsg);
    toast("Passkey renamed.");
  });
  return h(
    "li",
    { class: "item", dataset: { passkeyId: p.id } },
    h("span", { class: "item-icon" }, icon("passkey")),
    h("div", { class: "item-main" }, form),
  );
}

function removePasskey(p) {
  const name = p.name || "this passkey";
  return confirmDialog({
    title: `Remove “${name}”?`,
    message:
      "You won’t be able to sign in with it any more, and keygate signs you out on every other device (this one stays signed in). Your other passkeys keep working.",
    confirmLabel: "Remove passkey",
    danger: true,
    iconName: "trash",
    action: async () => {
      await api.del(`/api/passkeys/${encodeURIComponent(p.id)}`, {
        stepUpMessage: "Removing a passkey changes who can sign in to your account, so keygate asks for your passkey once more.",
      });
      await refresh("passkeys");
      await refreshSafely("sessions", el.sessionsMsg);
      toast("Passkey removed.");
    },
  });
}

el.passkeyForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  showMessage(el.passkeysMsg, "", "");
  const name = el.passkeyName.value.trim();
  // Adding a passkey may need a fresh passkey check first (api.js's step-up); then the
  // device makes the new one.
  const post = (path, body) =>
    api.post(path, body, {
      stepUpMessage:
        "Adding a passkey is a sensitive change, so keygate first asks for a passkey you already have. Then your device makes the new one.",
    });
  try {
    await busy(el.passkeyAdd, () => addPasskey(name || undefined, { post }));
  } catch (err) {
    showMessage(el.passkeysMsg, "error", err.message);
    return;
  }
  el.passkeyForm.reset();
  await refreshSafely("passkeys", el.passkeysMsg);
  toast("Passkey added. You can sign in with it now.");
});

// ---------------------------------------------------------------- sessions

function otherSessions() {
  return (state.sessions || []).filter((s) => !s.current);
}

function renderSessions() {
  const list = state.sessions;
  el.sessionsSection.hidden = !Array.isArray(list);
  if (!Array.isArray(list)) return;
  const sorted = [...list].sort(
    (a, b) => Number(Boolean(b.current)) - Number(Boolean(a.current)) || (b.last_seen_at || 0) - (a.last_seen_at || 0),
  );
  replace(el.sessionsList, sorted.map(sessionItem));
  el.sessionsRevokeOthers.hidden = otherSessions().length === 0;
}

function sessionItem(s) {
  const device = describeAgent(s.user_agent);
  const seen = s.current
    ? "Active now"
    : s.last_seen_at
      ? ["Last seen ", timeEl(s.last_seen_at, { relative: true, midSentence: true })]
      : "Not seen since signing in";
  return h(
    "li",
    { class: "item", dataset: { sessionId: s.id } },
    h("span", { class: "item-icon" }, icon("device")),
    h(
      "div",
      { class: "item-main" },
      h(
        "div",
        { class: "item-title", title: s.user_agent || null },
        device,
        s.current ? h("span", { class: "badge badge-active badge-inline" }, "This device") : null,
      ),
      h("div", { class: "item-meta" }, "Signed in ", timeEl(s.created_at), " · ", seen),
    ),
    s.current
      ? null
      : h(
          "div",
          { class: "item-actions" },
          h(
            "button",
            {
              class: "btn btn-sm btn-danger-outline",
              type: "button",
              "aria-label": `End session: ${device}, signed in ${formatDate(s.created_at)}`,
              onclick: (event) => endSession(s, device, event.currentTarget),
            },
            icon("logout"),
            "End session",
          ),
        ),
  );
}

async function endSession(s, device, button) {
  showMessage(el.sessionsMsg, "", "");
  try {
    // Ending another device's session is a step-up (this device's own is a plain sign-out).
    await busy(button, () =>
      api.del(`/api/sessions/${encodeURIComponent(s.id)}`, {
        stepUpMessage: "Signing out another device is something only you should be able to do, so keygate asks for your passkey once more.",
      }),
    );
  } catch (err) {
    if (err.status !== 404) {
      showMessage(el.sessionsMsg, "error", err.message);
      return;
    }
    // Already gone (it expired or signed out): the refreshed list shows that.
  }
  await refreshSafely("sessions", el.sessionsMsg);
  toast(`${device} is signed out.`);
}

async function revokeOthers(button) {
  showMessage(el.sessionsMsg, "", "");
  let out;
  try {
    // A step-up; right after signing in the session is fresh, so no second prompt there.
    out = await busy(button, () =>
      api.post(
        "/api/sessions/revoke-others",
        {},
        {
          stepUpMessage: "Signing out your other devices is something only you should be able to do, so keygate asks for your passkey once more.",
        },
      ),
    );
  } catch (err) {
    showMessage(el.sessionsMsg, "error", err.message);
    el.sessionsSection.scrollIntoView({ block: "start" });
    return;
  }
  offerSignOutOthers = false;
  await refreshSafely("sessions", el.sessionsMsg);
  const n = typeof out?.ended === "number" ? out.ended : null;
  toast(
    n === null
      ? "You’re signed out everywhere else."
      : n === 0
        ? "No other device was signed in."
        : `Signed out on ${n === 1 ? "1 other device" : `${n} other devices`}. This device stays signed in.`,
  );
}

el.sessionsRevokeOthers.addEventListener("click", () => revokeOthers(el.sessionsRevokeOthers));

// ---------------------------------------------------------------- recent activity

const activity = createRecentActivity({
  list: el.activityList,
  msg: el.activityMsg,
  more: el.activityMore,
  get: (path) => api.get(path),
});

// ---------------------------------------------------------------- account deletion

el.accountDelete.addEventListener("click", async () => {
  showMessage(el.dangerMsg, "", "");
  const deleted = await confirmDialog({
    title: "Delete your account?",
    message:
      "This permanently deletes your stored OpenAI key, every app key and every passkey. Apps using your keys stop working at once.",
    confirmLabel: "Delete account",
    danger: true,
    iconName: "user-x",
    typeToConfirm: "delete my account",
    action: () =>
      api.del("/api/account", {
        stepUpMessage: "Deleting your account can’t be undone, so keygate asks for your passkey once more.",
      }),
  });
  if (deleted) goToLogin("deleted");
});

// ---------------------------------------------------------------- helpers

async function refreshSafely(what, region) {
  try {
    await refresh(what);
  } catch (err) {
    showMessage(region, "error", `Saved, but the list couldn't be refreshed: ${err.message}`);
  }
}

load();
