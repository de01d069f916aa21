// The connect page (/connect): "Sign in with OpenAI" for apps, in a popup or as a redirect.
//
// Popup mode (/connect?mode=popup&nonce=N, opened by the JS SDK in web/sdk/keygate.js):
//   1. this page sends {type: "keygate:hello", nonce} to window.opener every 300 ms (the
//      nonce is no secret; "*" is fine for it);
//   2. the SDK answers {type: "keygate:init", nonce, appName, models, plan, scopes, limits,
//      expiresIn}; the app's
//      origin is that message's `event.origin`, as the browser saw it, never a parameter;
//   3. sign in (or register and store the OpenAI key), consent, approve with a passkey;
//   4. {type: "keygate:result", nonce, apiKey, baseURL, limits, plan, expiresAt} goes to window.opener with
//      targetOrigin = that exact origin (never "*"), or "keygate:denied" / "keygate:error".
//
// Redirect mode (/connect?response_type=code&redirect_uri=…&state=…&code_challenge=…): keygate
// checked the query before serving this page. The app's origin is redirect_uri's origin; the
// decision is a real top-level form post to /connect/approve or /connect/deny, answered with
// a 302 back to the app.

import { ApiError, request } from "./api.js";
import { parseAskedLimits, parseExpiresIn, renderConsentLimits } from "./consent-limits.js";
import { $, busy, h, icon, replace, showMessage, timeEl } from "./dom.js";
import { expiryWords, limitPhrases } from "./limits.js";
import { explainRefusal, passkeySupportProblem, register, signIn } from "./passkey.js";
import { parseRequested, scope, sortScopes } from "./scopes.js";

const HELLO_EVERY_MS = 300;
const HANDSHAKE_TIMEOUT_MS = 20_000;
const MAX_MODELS = 64;
const MAX_NAME = 100;

const el = {
  loading: $("#step-loading"),
  loadingText: $("#loading-text"),
  error: $("#step-error"),
  errorTitle: $("#error-title"),
  errorMessage: $("#error-message"),
  errorHint: $("#error-hint"),
  errorClose: $("#error-close"),
  banner: $("#app-banner"),
  avatar: $("#app-avatar"),
  bannerName: $("#banner-name"),
  bannerOrigin: $("#banner-origin"),
  signin: $("#step-signin"),
  signinLede: $("#signin-lede"),
  signinNotice: $("#signin-notice"),
  signinBtn: $("#signin"),
  registerForm: $("#register-form"),
  registerNotice: $("#register-notice"),
  registerBtn: $("#register"),
  nameInput: $("#name"),
  key: $("#step-key"),
  keyForm: $("#key-form"),
  keyInput: $("#openai-key"),
  keyNotice: $("#key-notice"),
  keySave: $("#key-save"),
  consent: $("#step-consent"),
  consentApp: $("#consent-app"),
  consentDeclared: $("#consent-declared"),
  consentOrigin: $("#consent-origin"),
  originLabel: $("#origin-label"),
  originNote: $("#origin-note"),
  existingGroup: $("#existing-group"),
  existingList: $("#existing-list"),
  scopesGroup: $("#scopes-group"),
  scopesList: $("#scopes-list"),
  modelsGroup: $("#models-group"),
  modelsBody: $("#models-body"),
  limitsGroup: $("#limits-group"),
  limitsAsked: $("#limits-asked"),
  limitControls: $("#limit-controls"),
  limitsResult: $("#limits-result"),
  planRow: $("#plan-row"),
  planName: $("#plan-name"),
  planHint: $("#plan-hint"),
  consentNotice: $("#consent-notice"),
  deny: $("#deny"),
  approve: $("#approve"),
  meName: $("#me-name"),
  switchAccount: $("#switch-account"),
  done: $("#step-done"),
  doneIcon: $("#done-icon"),
  doneTitle: $("#done-title"),
  doneMessage: $("#done-message"),
  doneClose: $("#done-close"),
  foot: $("#connect-foot"),
};

const STEPS = [el.loading, el.error, el.signin, el.key, el.consent, el.done];

/** An error that ends the flow, with a message for the person (and maybe a hint). */
class FlowError extends Error {
  constructor(message, { title, hint, code = "connect_failed" } = {}) {
    super(message);
    this.title = title;
    this.hint = hint;
    this.code = code;
  }
}

const params = new URLSearchParams(window.location.search);
const mode = params.has("response_type") ? "redirect" : params.get("mode") === "popup" ? "popup" : null;

/** What the app asked for, once known. */
const app = {
  origin: "",
  name: "",
  declaredName: null,
  models: null,
  plan: null,
  // Limits it asks for (keygate's shape) and how long the key should live (seconds), or null.
  limits: null,
  expiresIn: null,
  // What it may do: the scopes it asked for (["inference"] when it asked for none), and
  // whether it asked at all (only then does the approval name them).
  scopes: ["inference"],
  scopesAsked: false,
};
let nonce = "";
let me = null;
let finished = false;

// ---------------------------------------------------------------------------- steps

function show(step) {
  for (const s of STEPS) s.hidden = s !== step;
  el.banner.hidden = !app.origin || !(step === el.signin || step === el.key);
  const focusable = step.querySelector("h1");
  if (focusable) {
    focusable.setAttribute("tabindex", "-1");
    focusable.focus({ preventScroll: true });
  }
}

function fail(err) {
  const flow = err instanceof FlowError ? err : null;
  el.errorTitle.textContent = flow?.title || "This connection can't continue";
  el.errorMessage.textContent = err?.message || "Something went wrong. Close this window and try again.";
  el.errorHint.hidden = !flow?.hint;
  el.errorHint.textContent = flow?.hint || "";
  el.errorClose.hidden = mode !== "popup";
  show(el.error);
  // Tell the app, when there is a verified one to tell.
  if (mode === "popup" && app.origin && !finished) {
    finished = true;
    tellApp({ type: "keygate:error", message: err?.message || "The connection failed.", code: flow?.code || "connect_failed" });
  }
}

function tellApp(message) {
  const opener = window.opener;
  if (!opener || opener.closed) return false;
  // targetOrigin is the exact origin the browser reported for the app: if the window has
  // since gone elsewhere, the browser drops the message.
  opener.postMessage({ ...message, nonce }, app.origin);
  return true;
}

function closeSoon() {
  window.setTimeout(() => window.close(), 50);
}

el.errorClose.addEventListener("click", () => window.close());
el.doneClose.addEventListener("click", () => window.close());

// ------------------------------------------------------------------------ the app

/** Popup mode: learns the app's origin from the browser through the nonce handshake. */
function handshake() {
  return new Promise((resolve, reject) => {
    const opener = window.opener;
    if (!opener) {
      reject(
        new FlowError(
          "This window lost its link to the app that opened it, so keygate can't tell which website is asking or send it a key.",
          {
            title: "Can't reach the app",
            hint: "The app's page probably sets Cross-Origin-Opener-Policy, which cuts that link. Its developer can use keygate's redirect flow instead (see docs/INTEGRATING.md).",
            code: "no_opener",
          },
        ),
      );
      return;
    }
    const hello = () => {
      try {
        // Only the nonce: harmless to whoever receives it.
        opener.postMessage({ type: "keygate:hello", nonce }, "*");
      } catch {
        // the opener went away; the timeout below reports it
      }
    };
    const done = () => {
      window.removeEventListener("message", onMessage);
      window.clearInterval(timer);
      window.clearTimeout(giveUp);
    };
    function onMessage(event) {
      if (event.source !== opener) return;
      const data = event.data;
      if (!data || typeof data !== "object" || data.type !== "keygate:init" || data.nonce !== nonce) return;
      done();
      if (!/^https?:\/\//.test(event.origin)) {
        reject(new FlowError("The page asking has no web address keygate can bind a key to.", { code: "bad_origin" }));
        return;
      }
      resolve({ origin: event.origin, data });
    }
    window.addEventListener("message", onMessage);
    const timer = window.setInterval(hello, HELLO_EVERY_MS);
    const giveUp = window.setTimeout(() => {
      done();
      reject(
        new FlowError("The app that opened this window didn't answer. Close this window and try connecting again.", {
          title: "Can't reach the app",
          code: "no_handshake",
        }),
      );
    }, HANDSHAKE_TIMEOUT_MS);
    hello();
  });
}

function cleanName(value) {
  if (typeof value !== "string") return null;
  const name = value.replace(/\s+/g, " ").trim();
  if (!name) return null;
  return name.length > MAX_NAME ? name.slice(0, MAX_NAME) : name;
}

function cleanModels(value) {
  if (value === null || value === undefined) return null;
  const list = Array.isArray(value) ? value : String(value).split(",");
  const out = [];
  for (const m of list) {
    if (typeof m !== "string") continue;
    const name = m.trim();
    if (name && name.length <= MAX_NAME && !out.includes(name)) out.push(name);
  }
  return out.length ? out.slice(0, MAX_MODELS) : null;
}

function cleanPlan(value) {
  if (typeof value !== "string") return null;
  const plan = value.trim();
  return plan && plan.length <= 64 ? plan : null;
}

function setApp({ origin, appName, models, plan, scopes, limits, expiresIn }) {
  app.origin = origin; // first, so a refusal below reaches the app (fail() tells it)
  const requested = parseRequested(scopes);
  if (requested.unknown.length) {
    throw new FlowError(
      `The app asked for access keygate doesn’t have (${requested.unknown.join(", ")}), so it can’t be connected. Its developer needs to fix the request.`,
      { title: "This app asked for something unknown", code: "bad_request" },
    );
  }
  app.scopes = requested.scopes;
  app.scopesAsked = scopes !== null && scopes !== undefined && scopes !== "";
  app.origin = origin;
  app.declaredName = cleanName(appName);
  app.name = app.declaredName || new URL(origin).host;
  app.models = cleanModels(models);
  app.plan = cleanPlan(plan);
  try {
    app.limits = parseAskedLimits(limits);
    app.expiresIn = parseExpiresIn(expiresIn);
  } catch (err) {
    throw new FlowError(`${err.message} Its developer needs to fix the request.`, {
      title: "This app asked for something keygate can’t read",
      code: "bad_request",
    });
  }
  document.title = `Connect ${app.name} · keygate`;

  el.avatar.textContent = app.name.slice(0, 1).toUpperCase();
  el.bannerName.textContent = app.name;
  el.bannerName.nextElementSibling.hidden = !app.declaredName;
  el.bannerOrigin.textContent = origin;
  el.signinLede.textContent = `to connect ${app.name} to your OpenAI key.`;
}

function isLocal(origin) {
  const { hostname } = new URL(origin);
  return hostname === "localhost" || hostname === "127.0.0.1" || hostname === "[::1]" || hostname.endsWith(".localhost");
}

// ---------------------------------------------------------------------- account

const quiet = { redirectOn401: false, stepUp: false };
const api = {
  get: (path) => request("GET", path, undefined, quiet),
  post: (path, body = {}) => request("POST", path, body, quiet),
  // Storing the first key may need a fresh passkey check (a sign-in a while ago): step-up on.
  put: (path, body, options = {}) => request("PUT", path, body, { ...quiet, stepUp: true, ...options }),
};

async function currentUser() {
  try {
    return await api.get("/api/me");
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return null;
    throw err;
  }
}

/** Shows sign-in / registration; resolves with the person once either worked. */
function signInStep() {
  showMessage(el.signinNotice, "", "");
  showMessage(el.registerNotice, "", "");
  const unsupported = passkeySupportProblem();
  if (unsupported) {
    showMessage(el.signinNotice, "error", unsupported);
    el.signinBtn.disabled = true;
    el.registerBtn.disabled = true;
  }
  show(el.signin);
  return new Promise((resolve) => {
    let working = false;
    const run = async (button, region, work) => {
      if (working) return;
      working = true;
      showMessage(el.signinNotice, "", "");
      showMessage(el.registerNotice, "", "");
      try {
        const user = await busy(button, work);
        cleanup();
        resolve(user || (await currentUser()));
      } catch (err) {
        showMessage(region, "error", err?.message || "That didn't work. Try again.");
      } finally {
        working = false;
      }
    };
    const onSignIn = () => run(el.signinBtn, el.signinNotice, signIn);
    const onRegister = (event) => {
      event.preventDefault();
      const name = el.nameInput.value.trim();
      if (!name) {
        el.nameInput.setAttribute("aria-invalid", "true");
        showMessage(el.registerNotice, "error", "Enter your name to create an account.");
        el.nameInput.focus();
        return;
      }
      el.nameInput.removeAttribute("aria-invalid");
      run(el.registerBtn, el.registerNotice, () => register(name));
    };
    const cleanup = () => {
      el.signinBtn.removeEventListener("click", onSignIn);
      el.registerForm.removeEventListener("submit", onRegister);
    };
    el.signinBtn.addEventListener("click", onSignIn);
    el.registerForm.addEventListener("submit", onRegister);
  });
}

/** A new person stores their OpenAI key; resolves once it is sealed. */
function keyStep() {
  showMessage(el.keyNotice, "", "");
  show(el.key);
  el.keyInput.focus();
  return new Promise((resolve) => {
    const onSubmit = async (event) => {
      event.preventDefault();
      const value = el.keyInput.value.trim();
      if (!value.startsWith("sk-")) {
        el.keyInput.setAttribute("aria-invalid", "true");
        showMessage(el.keyNotice, "error", "That doesn’t look like an OpenAI API key: they start with “sk-”.");
        el.keyInput.focus();
        return;
      }
      el.keyInput.removeAttribute("aria-invalid");
      showMessage(el.keyNotice, "", "");
      try {
        await busy(el.keySave, () =>
          api.put(
            "/api/key",
            { api_key: value },
            {
              stepUpMessage:
                "Storing your OpenAI key lets apps you approve spend on your OpenAI account, so keygate asks for your passkey once more.",
            },
          ),
        );
      } catch (err) {
        showMessage(el.keyNotice, "error", err?.message || "keygate couldn't store the key. Try again.");
        return;
      }
      el.keyInput.value = "";
      el.keyForm.removeEventListener("submit", onSubmit);
      resolve();
    };
    el.keyForm.addEventListener("submit", onSubmit);
  });
}

/**
 * Signed in, with an OpenAI key stored — unless the plan the app asks for lends the operator's
 * key to people who have none (`use_operator_key`): then the key step is skipped.
 */
async function accountStep() {
  me = await currentUser();
  if (!me) me = await signInStep();
  const key = await api.get("/api/key");
  if (key?.enrolled) return;
  const plan = await planCeiling();
  if (!plan?.use_operator_key) await keyStep();
}

// ---------------------------------------------------------------------- consent

let existing = [];
/** The limits section's {collect()} (consent-limits.js), once drawn. */
let consentLimits = null;

/**
 * The plan's ceiling: {name, limits} for the plan the app asked for (or keygate's default plan),
 * null when there is none (or this keygate doesn't know plans).
 */
async function planCeiling() {
  const query = app.plan ? `?name=${encodeURIComponent(app.plan)}` : "";
  try {
    const plan = await api.get(`/api/connect/plan${query}`);
    return plan && (plan.name || plan.limits) ? plan : null;
  } catch {
    return null;
  }
}

async function consentStep() {
  showMessage(el.consentNotice, "", "");
  existing = (await api.get(`/api/connect/existing?origin=${encodeURIComponent(app.origin)}`)) || [];
  existing = existing.filter((g) => g && g.state === "active");
  existing.sort((a, b) => (b.last_used_at || b.created_at || 0) - (a.last_used_at || a.created_at || 0));

  el.consentApp.textContent = app.name;
  el.consentDeclared.hidden = !app.declaredName;
  el.consentOrigin.textContent = app.origin;
  const secure = app.origin.startsWith("https://") || isLocal(app.origin);
  el.originLabel.textContent = mode === "popup" ? "Verified website" : "Website you'll return to";
  el.originNote.textContent =
    mode === "popup"
      ? "Checked by your browser. Only this website will be able to use the key."
      : "keygate sends you back here with a one-time code. Only this website will be able to use the key.";
  if (!secure) el.originNote.textContent += " Warning: this website doesn't use HTTPS.";
  el.meName.textContent = me?.name || "you";

  consentLimits = renderConsentLimits({
    els: {
      asked: el.limitsAsked,
      controls: el.limitControls,
      result: el.limitsResult,
      planRow: el.planRow,
      planName: el.planName,
      planHint: el.planHint,
    },
    asked: { limits: app.limits, expiresIn: app.expiresIn, models: app.models, scopes: app.scopes },
    plan: await planCeiling(),
    planAsked: app.plan,
  });
  renderScopes();
  renderModels();
  renderExisting();
  show(el.consent);
}

function renderExisting() {
  el.existingGroup.hidden = existing.length === 0;
  if (!existing.length) {
    replace(el.existingList);
    syncModelsEnabled();
    return;
  }
  const options = existing.map((g, i) =>
    choice({
      name: "connection",
      value: g.id,
      checked: i === 0,
      title: `Use existing connection “${g.name}” (new key)`,
      meta: [
        `Models: ${g.models?.length ? g.models.join(", ") : "all models"}`,
        h("br"),
        Array.isArray(g.scopes) ? [`Can: ${scopeLabels(g.scopes)}`, h("br")] : null,
        `Limits: ${limitPhrases(g.limits).join(", ") || "none"} · ${g.expires_at ? expiryWords(g.expires_at).replace(/^e/, "E") : "Never expires"}`,
        h("br"),
        "Connected ",
        timeEl(g.created_at),
        " · Last used: ",
        timeEl(g.last_used_at, { relative: true, never: "Never" }),
      ],
      note: "Keeps its models, what it may do and its settings. The app gets a new key; the one it had keeps working a short while, so nothing breaks, then stops.",
    }),
  );
  options.push(
    choice({
      name: "connection",
      value: "new",
      checked: false,
      title: "Create a new connection",
      meta: ["A second, separate key, with what the app asks for below; choose its models."],
    }),
  );
  replace(el.existingList, options);
  for (const input of el.existingList.querySelectorAll("input")) {
    input.addEventListener("change", syncModelsEnabled);
  }
  syncModelsEnabled();
}

function choice({ name, value, checked, title, meta, note }) {
  const id = `${name}-${value}`.replace(/[^a-zA-Z0-9_-]/g, "-");
  return h(
    "label",
    { class: "choice", for: id },
    h("input", { type: "radio", id, name, value, checked }),
    h(
      "span",
      { class: "choice-main" },
      h("span", { class: "choice-title" }, title),
      meta ? h("span", { class: "choice-meta" }, meta) : null,
      note ? h("span", { class: "choice-note" }, note) : null,
    ),
  );
}

function selectedReuse() {
  const picked = el.existingList.querySelector("input[name=connection]:checked");
  return picked && picked.value !== "new" ? existing.find((g) => g.id === picked.value) || null : null;
}

/** Re-keying an existing connection keeps its models, scopes and plan: those are for new ones. */
function syncModelsEnabled() {
  const reuse = Boolean(selectedReuse());
  el.scopesGroup.hidden = reuse;
  el.modelsGroup.hidden = reuse;
  el.modelsGroup.disabled = reuse;
  el.limitsGroup.hidden = reuse;
}

/** What the app asks to do with the person's OpenAI account, in plain words. */
function renderScopes() {
  replace(
    el.scopesList,
    app.scopes.map((id) => h("li", { dataset: { scope: id } }, icon("check"), h("span", {}, scope(id).words))),
  );
}

function scopeLabels(ids) {
  const known = sortScopes(ids);
  return known.length ? known.map((id) => scope(id).label.toLowerCase()).join(", ") : "nothing";
}

function renderModels() {
  if (app.models) {
    const boxes = app.models.map((m, i) => {
      const id = `model-${i}`;
      return h(
        "label",
        { class: "check", for: id },
        h("input", { type: "checkbox", id, name: "model", value: m, checked: true }),
        h("span", { class: "chip" }, m),
      );
    });
    replace(
      el.modelsBody,
      h("div", { class: "checks" }, boxes),
      h("p", { class: "hint" }, "Untick any you don't want this app to use."),
    );
    return;
  }
  const only = h("input", {
    type: "text",
    id: "models-only",
    class: "mono",
    placeholder: "gpt-4o-mini, gpt-4.1-mini",
    autocomplete: "off",
    spellcheck: "false",
    "aria-label": "Only these models (comma-separated)",
    disabled: true,
  });
  const all = choice({ name: "models-scope", value: "all", checked: true, title: "All models", meta: ["Any model the app asks OpenAI for."] });
  const some = choice({ name: "models-scope", value: "some", checked: false, title: "Only these models" });
  replace(el.modelsBody, h("div", { class: "choices" }, all, some, h("div", { class: "choice-extra" }, only)));
  for (const input of el.modelsBody.querySelectorAll("input[name=models-scope]")) {
    input.addEventListener("change", () => {
      const restricted = el.modelsBody.querySelector("input[name=models-scope]:checked")?.value === "some";
      only.disabled = !restricted;
      if (restricted) only.focus();
    });
  }
}

/**
 * The person's choice: {models: string[] | null, reuseGrantId: string | null, limits, expiresAt}
 * (limits and expiresAt: what the limits section holds; null for none).
 */
function collectChoice() {
  const reuse = selectedReuse();
  if (reuse) return { models: null, reuseGrantId: reuse.id, limits: null, expiresAt: null };
  const { limits, expiresAt } = consentLimits ? consentLimits.collect() : { limits: null, expiresAt: null };
  return { ...collectModels(), limits, expiresAt };
}

function collectModels() {
  if (app.models) {
    const picked = [...el.modelsBody.querySelectorAll("input[name=model]:checked")].map((i) => i.value);
    if (!picked.length) throw new Error("Pick at least one model, or choose Deny.");
    return { models: picked, reuseGrantId: null };
  }
  const scope = el.modelsBody.querySelector("input[name=models-scope]:checked")?.value;
  if (scope === "some") {
    const input = $("#models-only", el.modelsBody);
    const list = cleanModels(input.value);
    if (!list) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
      throw new Error("Enter the models this app may use, separated by commas.");
    }
    input.removeAttribute("aria-invalid");
    return { models: list, reuseGrantId: null };
  }
  return { models: null, reuseGrantId: null };
}

// -------------------------------------------------------------------- decisions

/** Sends the approval; a refused passkey is put into keygate's own words (never webauthn-rs's). */
async function approveFinish(body) {
  try {
    return await api.post("/api/connect/approve/finish", body);
  } catch (err) {
    throw explainRefusal(err, "approve");
  }
}

/** The approval itself: a passkey assertion for the signed-in person. */
async function approvalAssertion() {
  const { ceremony, options } = await api.post("/api/connect/approve/start", {});
  let publicKey;
  try {
    publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options.publicKey);
  } catch {
    throw new Error("keygate sent passkey options this browser could not read.");
  }
  let credential;
  try {
    credential = await navigator.credentials.get({ publicKey });
  } catch (err) {
    if (err?.name === "NotAllowedError" || err?.name === "AbortError") {
      throw new Error("The passkey prompt was closed before it finished, so nothing was shared. Approve again when you're ready.");
    }
    throw new Error("Your passkey couldn't be used. Try again.");
  }
  if (!credential) throw new Error("No passkey was used, so nothing was shared.");
  return { ceremony, credential: credential.toJSON() };
}

let deciding = false;

async function approve(event) {
  event.preventDefault();
  if (deciding) return;
  showMessage(el.consentNotice, "", "");
  let picked;
  try {
    picked = collectChoice();
  } catch (err) {
    // A refused limit is said next to its field (consent-limits.js); anything else here.
    if (!err.fieldId) showMessage(el.consentNotice, "error", err.message);
    return;
  }
  deciding = true;
  el.deny.disabled = true;
  try {
    await busy(el.approve, async () => {
      if (mode === "popup" && (!window.opener || window.opener.closed)) {
        throw new FlowError("The app's window was closed, so there is nobody to hand the key to. Nothing was shared.", {
          title: "The app is gone",
          code: "opener_closed",
        });
      }
      const { ceremony, credential } = await approvalAssertion();
      if (mode === "popup") {
        const out = await approveFinish({
          ceremony,
          credential,
          origin: app.origin,
          app_name: app.declaredName,
          models: picked.models,
          plan: app.plan,
          reuse_grant_id: picked.reuseGrantId,
          // What the person chose (only when there is something: an older keygate knows neither).
          ...(picked.limits ? { limits: picked.limits } : {}),
          ...(picked.expiresAt ? { expires_at: picked.expiresAt } : {}),
          // Only when the app asked: keygate grants ["inference"] otherwise.
          ...(app.scopesAsked && !picked.reuseGrantId ? { scopes: app.scopes } : {}),
        });
        const grant = out.grant || {};
        const result = {
          type: "keygate:result",
          apiKey: out.api_key,
          baseURL: out.base_url,
          // What applies, as keygate stored it.
          limits: grant.limits ?? null,
          plan: grant.plan ?? null,
          expiresAt: grant.expires_at ?? null,
        };
        if (!tellApp(result)) {
          throw new FlowError("The app's window was closed before keygate could hand it the key.", {
            title: "The app is gone",
            code: "opener_closed",
          });
        }
        finished = true;
        showDone("Connected", `${app.name} can now use OpenAI through your keygate. This window closes by itself.`);
        closeSoon();
      } else {
        submitForm("/connect/approve", {
          ceremony,
          credential: JSON.stringify(credential),
          redirect_uri: params.get("redirect_uri") || "",
          state: params.get("state") || "",
          code_challenge: params.get("code_challenge") || "",
          code_challenge_method: params.get("code_challenge_method") || "",
          app_name: app.declaredName || "",
          models: picked.models ? picked.models.join(",") : "",
          plan: app.plan || "",
          reuse_grant_id: picked.reuseGrantId || "",
          ...(picked.limits ? { limits: JSON.stringify(picked.limits) } : {}),
          ...(picked.expiresAt ? { expires_at: picked.expiresAt } : {}),
          ...(app.scopesAsked && !picked.reuseGrantId ? { scopes: app.scopes.join(",") } : {}),
        });
        finished = true;
        showDone("Approved", `Taking you back to ${app.origin}…`);
      }
    });
  } catch (err) {
    if (err instanceof FlowError) {
      fail(err);
    } else {
      showMessage(el.consentNotice, "error", err?.message || "That didn't work. Try again.");
    }
  } finally {
    deciding = false;
    el.deny.disabled = false;
  }
}

function deny() {
  if (deciding) return;
  deciding = true;
  finished = true;
  if (mode === "popup") {
    tellApp({ type: "keygate:denied" });
    // For the person's activity log only: the app has its answer whatever this says.
    // keepalive: the window closes right away, and the request must outlive it.
    fetch("/api/connect/deny", {
      method: "POST",
      keepalive: true,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ origin: app.origin, ...(app.declaredName ? { app_name: app.declaredName } : {}) }),
    }).catch(() => {});
    showDone("Not connected", `${app.name} didn't get access. This window closes by itself.`, true);
    closeSoon();
  } else {
    submitForm("/connect/deny", {
      redirect_uri: params.get("redirect_uri") || "",
      state: params.get("state") || "",
      app_name: app.declaredName || "",
    });
    showDone("Not connected", `Taking you back to ${app.origin}…`, true);
  }
}

/** A real top-level form post: keygate answers with a 302 back to the app. */
function submitForm(action, fields) {
  const form = h(
    "form",
    { method: "post", action, hidden: true },
    Object.entries(fields).map(([name, value]) => h("input", { type: "hidden", name, value })),
  );
  document.body.append(form);
  form.submit();
}

function showDone(title, message, declined = false) {
  el.doneTitle.textContent = title;
  el.doneMessage.textContent = message;
  el.doneIcon.classList.toggle("is-muted", declined);
  replace(el.doneIcon, icon(declined ? "x" : "check"));
  el.doneClose.hidden = mode !== "popup";
  show(el.done);
}

async function switchAccount() {
  try {
    await busy(el.switchAccount, () => api.post("/api/auth/logout", {}));
  } catch (err) {
    showMessage(el.consentNotice, "error", err?.message || "Couldn't sign out. Try again.");
    return;
  }
  me = null;
  try {
    await accountStep();
    await consentStep();
  } catch (err) {
    fail(err);
  }
}

el.consent.addEventListener("submit", approve);
// A changed choice clears what was said about the last attempt.
el.consent.addEventListener("input", () => showMessage(el.consentNotice, "", ""));
el.deny.addEventListener("click", deny);
el.switchAccount.addEventListener("click", switchAccount);

// ------------------------------------------------------------------------- start

async function start() {
  if (mode === "popup") {
    nonce = params.get("nonce") || "";
    if (!/^[0-9a-f]{32}$/.test(nonce)) {
      throw new FlowError("This link is incomplete. Apps open this page with keygate's SDK; start from the app again.", {
        code: "bad_request",
      });
    }
    el.loadingText.textContent = "Connecting to the app…";
    const { origin, data } = await handshake();
    setApp({
      origin,
      appName: data.appName,
      models: data.models,
      plan: data.plan,
      scopes: data.scopes,
      limits: data.limits,
      expiresIn: data.expiresIn,
    });
  } else if (mode === "redirect") {
    let origin;
    try {
      origin = new URL(params.get("redirect_uri") || "").origin;
    } catch {
      throw new FlowError("This connection link has no valid return address.", { code: "bad_request" });
    }
    setApp({
      origin,
      appName: params.get("app_name"),
      models: params.get("models"),
      plan: params.get("plan"),
      scopes: params.get("scopes"),
      limits: params.get("limits"),
      expiresIn: params.get("expires_in"),
    });
  } else {
    throw new FlowError(
      "Apps open this page to ask for access to your OpenAI key. To manage your key and connected apps, open your dashboard.",
      { title: "Nothing to connect", hint: "" },
    );
  }
  el.loadingText.textContent = "Loading your vault…";
  await accountStep();
  await consentStep();
}

start().catch(fail);
