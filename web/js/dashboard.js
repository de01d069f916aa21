// The dashboard: the person's OpenAI key, their apps' keys (grants), their passkeys, and
// account deletion. Every change goes through api.js, which handles an expired session and
// the passkey step-up for sensitive changes.

import { api, goToLogin } from "./api.js";
import { $, busy, formatDate, h, icon, replace, showMessage, timeEl } from "./dom.js";
import { addPasskey } from "./passkey.js";
import { confirmDialog, toast } from "./ui.js";

const state = { me: null, key: null, grants: [], passkeys: [] };

const el = {
  loading: $("#loading"),
  loadError: $("#load-error"),
  content: $("#content"),
  account: $("#account"),
  avatar: $("#avatar"),
  userName: $("#user-name"),
  signout: $("#signout"),
  greeting: $("#greeting"),
  // key
  keyMsg: $("#key-msg"),
  keyStatus: $("#key-status"),
  keyLast4: $("#key-last4"),
  keyCreated: $("#key-created"),
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
  grantCreate: $("#grant-create"),
  grantCancel: $("#grant-cancel"),
  newKey: $("#new-key"),
  newKeyHeading: $("#new-key-heading"),
  newKeyValue: $("#new-key-value"),
  newKeyBase: $("#new-key-base"),
  newKeySnippet: $("#new-key-snippet"),
  newKeyDone: $("#new-key-done"),
  grantsList: $("#grants-list"),
  // passkeys
  passkeysMsg: $("#passkeys-msg"),
  passkeysList: $("#passkeys-list"),
  passkeyForm: $("#passkey-form"),
  passkeyName: $("#passkey-name"),
  passkeyAdd: $("#passkey-add"),
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
    const [key, grants, passkeys] = await Promise.all([
      api.get("/api/key"),
      api.get("/api/grants"),
      api.get("/api/passkeys"),
    ]);
    Object.assign(state, { me, key, grants: grants || [], passkeys: passkeys || [] });
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
  el.loading.hidden = true;
  el.content.hidden = false;
}

async function refresh(what) {
  const paths = { key: "/api/key", grants: "/api/grants", passkeys: "/api/passkeys" };
  state[what] = await api.get(paths[what]);
  if (what === "key") {
    renderKey();
    renderGrants(); // the "store your key first" hint depends on it
  }
  if (what === "grants") renderGrants();
  if (what === "passkeys") renderPasskeys();
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

function renderKey() {
  const enrolled = Boolean(state.key?.enrolled);
  el.keyStatus.hidden = !enrolled || replacing;
  el.keyForm.hidden = enrolled && !replacing;
  if (enrolled) {
    el.keyLast4.textContent = `••••${state.key.last4 || ""}`;
    el.keyCreated.textContent = state.key.created_at
      ? `Stored ${formatDate(state.key.created_at)} · sealed in the vault`
      : "Sealed in the vault";
  }
  el.keyFormTitle.textContent = replacing ? "Replace your OpenAI key" : "Store your OpenAI key";
  el.keySave.textContent = replacing ? "Replace key" : "Store key";
  el.keyCancel.hidden = !replacing;
}

el.keyReplace.addEventListener("click", () => {
  replacing = true;
  showMessage(el.keyMsg, "", "");
  renderKey();
  el.keyInput.focus();
});

el.keyCancel.addEventListener("click", () => {
  replacing = false;
  el.keyInput.value = "";
  el.keyInput.removeAttribute("aria-invalid");
  showMessage(el.keyMsg, "", "");
  showMessage(el.keyFormMsg, "", "");
  renderKey();
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
  const wasReplacing = replacing;
  try {
    await busy(el.keySave, () => api.put("/api/key", { api_key: value }));
  } catch (err) {
    if (err.code === "key_rejected") {
      return invalidKey(err.message);
    }
    showMessage(el.keyFormMsg, "error", err.message);
    return;
  }
  el.keyInput.value = "";
  replacing = false;
  await refreshSafely("key", el.keyMsg);
  toast(wasReplacing ? "Your new OpenAI key is stored." : "Your OpenAI key is stored and sealed.");
  el.keyReplace.focus();
});

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
      await api.del("/api/key");
      await refresh("key");
      toast("Your OpenAI key was deleted.");
    },
  }),
);

// ---------------------------------------------------------------- grants

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
  const body = { name };
  if (models.length) body.models = models;
  let created;
  try {
    created = await busy(el.grantCreate, () => api.post("/api/grants", body));
  } catch (err) {
    showMessage(el.grantsMsg, "error", err.message);
    return;
  }
  openGrantForm(false);
  showNewKey(created);
  await refreshSafely("grants", el.grantsMsg);
});

function showNewKey(created) {
  const apiKey = created.api_key;
  const baseURL = created.base_url;
  const name = created.grant?.name;
  el.newKeyHeading.textContent = name ? `Your new key for “${name}” is ready` : "Your new key is ready";
  el.newKeyValue.textContent = apiKey;
  el.newKeyBase.textContent = baseURL;
  replace(el.newKeySnippet, ...snippet(apiKey, baseURL));
  el.newKey.dataset.plain = plainSnippet(apiKey, baseURL);
  el.newKey.hidden = false;
  el.newKey.focus();
}

function plainSnippet(apiKey, baseURL) {
  return [
    'import OpenAI from "openai";',
    "",
    "const client = new OpenAI({",
    `  apiKey: ${JSON.stringify(apiKey)},`,
    `  baseURL: ${JSON.stringify(baseURL)},`,
    "});",
    "",
  ].join("\n");
}

function snippet(apiKey, baseURL) {
  const k = (t) => h("span", { class: "tok-k" }, t);
  const s = (t) => h("span", { class: "tok-s" }, JSON.stringify(t));
  return [
    k("import"), " OpenAI ", k("from"), " ", s("openai"), ";\n\n",
    k("const"), " client = ", k("new"), " OpenAI({\n",
    "  apiKey: ", s(apiKey), ",\n",
    "  baseURL: ", s(baseURL), ",\n",
    "});",
  ];
}

el.newKeyDone.addEventListener("click", () => {
  // Forget the secret: it is not kept anywhere on the page once dismissed.
  el.newKey.hidden = true;
  el.newKeyValue.textContent = "";
  el.newKeySnippet.replaceChildren();
  delete el.newKey.dataset.plain;
  el.grantNew.focus();
});

for (const button of el.newKey.querySelectorAll("[data-copy]")) {
  button.addEventListener("click", () => {
    const target = document.getElementById(button.dataset.copy);
    const text = target === el.newKeySnippet ? el.newKey.dataset.plain : target.textContent;
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

function renderGrants() {
  const grants = [...(state.grants || [])].sort((a, b) => {
    const rank = (g) => (g.state === "active" ? 0 : 1);
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
      ["Name", "Origin", "Models", "Created", "Last used", "Status"].map((t) => h("th", { scope: "col" }, t)),
      h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")),
    ),
  );
  const rows = grants.map((g) => grantRow(g));
  parts.push(
    h(
      "div",
      { class: "table-wrap" },
      h("table", { class: "data", id: "grants-table" }, h("caption", { class: "visually-hidden" }, "Your app keys"), head, h("tbody", {}, rows)),
    ),
  );
  replace(el.grantsList, parts);
}

function grantRow(g) {
  const active = g.state === "active";
  const models =
    Array.isArray(g.models) && g.models.length
      ? h("div", { class: "chips" }, g.models.map((m) => h("span", { class: "chip" }, m)))
      : h("span", { class: "muted" }, "All models");
  const origin = g.origin
    ? h("span", { class: "origin" }, g.origin)
    : h("span", { class: "faint" }, h("span", { "aria-hidden": "true" }, "—"), h("span", { class: "visually-hidden" }, "Any"));
  let expiry = null;
  if (g.expires_at && active) {
    expiry = h("div", { class: "small muted" }, "Expires ", timeEl(g.expires_at));
  }
  const actions = h("td", { class: "cell-actions" });
  if (active) {
    actions.append(
      h(
        "button",
        {
          class: "btn btn-sm btn-danger-outline",
          type: "button",
          "aria-label": `Revoke ${g.name}`,
          onclick: () => revokeGrant(g),
        },
        "Revoke",
      ),
    );
  }
  return h(
    "tr",
    { class: active ? "" : "is-inactive", dataset: { grantId: g.id } },
    h("td", { class: "cell-name", "data-label": "Name" }, h("div", { class: "grant-name" }, g.name), expiry),
    h("td", { "data-label": "Origin" }, origin),
    h("td", { "data-label": "Models" }, models),
    h("td", { "data-label": "Created" }, timeEl(g.created_at)),
    h("td", { "data-label": "Last used" }, timeEl(g.last_used_at, { relative: true })),
    h(
      "td",
      { "data-label": "Status" },
      h("span", { class: `badge badge-${g.state}` }, STATE_LABELS[g.state] || g.state),
    ),
    actions,
  );
}

function revokeGrant(g) {
  return confirmDialog({
    title: `Revoke “${g.name}”?`,
    message:
      "Apps using this key stop working immediately. This can’t be undone: to reconnect the app, create a new key.",
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
        p.last_used_at ? ["Last used ", timeEl(p.last_used_at, { relative: true })] : "Not used to sign in yet",
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
    message: "You won’t be able to sign in with it any more. Your other passkeys keep working.",
    confirmLabel: "Remove passkey",
    danger: true,
    iconName: "trash",
    action: async () => {
      await api.del(`/api/passkeys/${encodeURIComponent(p.id)}`);
      await refresh("passkeys");
      toast("Passkey removed.");
    },
  });
}

el.passkeyForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  showMessage(el.passkeysMsg, "", "");
  const name = el.passkeyName.value.trim();
  try {
    await busy(el.passkeyAdd, () => addPasskey(name || undefined));
  } catch (err) {
    showMessage(el.passkeysMsg, "error", err.message);
    return;
  }
  el.passkeyForm.reset();
  await refreshSafely("passkeys", el.passkeysMsg);
  toast("Passkey added. You can sign in with it now.");
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
    action: () => api.del("/api/account"),
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
