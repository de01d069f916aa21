// keygate JS SDK: "Sign in with OpenAI" for web apps.
//
// An app asks the person for an OpenAI-compatible `{apiKey, baseURL}` pair held in their
// keygate vault; the person approves with a passkey, and the app never sees their OpenAI
// key. The result goes straight into the official `openai` package:
//
//   import { requestOpenAIAPI } from "https://vault.example/sdk/keygate.js";
//   import OpenAI from "openai";
//   const openai = new OpenAI(await requestOpenAIAPI({ vault: "https://vault.example" }));
//
// Two ways to connect:
// - popup (default): requestOpenAIAPI() opens VAULT/connect in a popup. The popup learns the
//   app's origin from the browser (the `origin` of a handshake message carrying a one-time
//   nonce) and posts the key back to exactly that origin. Call it from a click handler.
// - redirect + PKCE: for server apps, blocked popups and pages that cut `window.opener`
//   (Cross-Origin-Opener-Policy). See createPkcePair, buildConnectURL, exchangeCode and
//   completeRedirect, or requestOpenAIAPI({mode: "redirect", redirectUri}).
//
// No dependencies; an ES module for browsers (the redirect helpers also run in Node 20+).
// Licensed under Apache-2.0.

/** The SDK's version. */
export const VERSION = "0.2.0";

const POPUP_NAME = "keygate-connect";
const POPUP_FEATURES = "popup,width=480,height=720";
const DEFAULT_TIMEOUT_MS = 5 * 60 * 1000;
const POLL_MS = 300;
// After the popup is seen closed, how long a result already on its way may still arrive.
const CLOSE_GRACE_MS = 500;
const STORAGE_PREFIX = "keygate:redirect:";

/**
 * The endpoint scopes a connection can ask for (`requestOpenAIAPI({scopes})`). Without
 * `scopes` the app gets `["inference"]`: models, chat, responses, embeddings, moderation,
 * audio and images. The person sees each asked scope in plain words before approving.
 */
export const SCOPES = Object.freeze(["inference", "files", "batches", "fine_tuning", "assistants", "stored"]);

// ------------------------------------------------------------------------------ errors

/**
 * Base class of every error this SDK throws. `code` is a stable, machine-readable name.
 */
export class KeygateError extends Error {
  /**
   * @param {string} message
   * @param {{code?: string, cause?: unknown}} [options]
   */
  constructor(message, options = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "KeygateError";
    /** @type {string} */
    this.code = options.code || "keygate_error";
  }
}

/** The browser blocked the popup: call requestOpenAIAPI() straight from a click handler, or use the redirect flow. */
export class PopupBlockedError extends KeygateError {
  /** @param {string} [message] */
  constructor(message) {
    super(
      message ||
        "The browser blocked the keygate popup. Call requestOpenAIAPI() directly in a click handler, or use the redirect flow.",
      { code: "popup_blocked" },
    );
    this.name = "PopupBlockedError";
  }
}

/** The person chose not to connect the app. */
export class UserDeniedError extends KeygateError {
  /** @param {string} [message] */
  constructor(message) {
    super(message || "The person declined to connect this app.", { code: "access_denied" });
    this.name = "UserDeniedError";
  }
}

/** The popup was closed before the person approved or declined. */
export class PopupClosedError extends KeygateError {
  /** @param {string} [message] */
  constructor(message) {
    super(message || "The keygate window was closed before the connection finished.", { code: "popup_closed" });
    this.name = "PopupClosedError";
  }
}

/** Nothing was decided within `timeoutMs`; the popup has been closed. */
export class TimeoutError extends KeygateError {
  /** @param {string} [message] */
  constructor(message) {
    super(message || "The connection wasn't finished in time. Try again.", { code: "timeout" });
    this.name = "TimeoutError";
  }
}

/**
 * The vault could not complete the request: a bad `vault` URL, an error reported by the
 * connect page, or an error answer from keygate's API (`status` and `code` from its
 * OpenAI-shaped error body when there is one).
 */
export class VaultError extends KeygateError {
  /**
   * @param {string} message
   * @param {{code?: string, status?: number, cause?: unknown}} [options]
   */
  constructor(message, options = {}) {
    super(message, { code: options.code || "vault_error", cause: options.cause });
    this.name = "VaultError";
    /** HTTP status of keygate's answer, or 0 when there was none. @type {number} */
    this.status = options.status || 0;
  }
}

// ----------------------------------------------------------------------------- helpers

/**
 * Parses the vault's URL: http(s), without credentials or fragment. `base` keeps a path
 * prefix, for a keygate served under one.
 * @param {unknown} vault
 * @returns {{origin: string, base: string}}
 */
function parseVault(vault) {
  if (typeof vault !== "string" || !vault.trim()) {
    throw new VaultError("`vault` must be the URL of a keygate server, such as https://vault.example", {
      code: "invalid_vault",
    });
  }
  let url;
  try {
    url = new URL(vault.trim());
  } catch (cause) {
    throw new VaultError(`\`vault\` is not a valid URL: ${vault}`, { code: "invalid_vault", cause });
  }
  if ((url.protocol !== "https:" && url.protocol !== "http:") || url.username || url.password || url.hash) {
    throw new VaultError("`vault` must be an http(s) URL without credentials or fragment", {
      code: "invalid_vault",
    });
  }
  const path = url.pathname.replace(/\/+$/, "");
  return { origin: url.origin, base: url.origin + path };
}

/** @param {number} bytes */
function randomBytes(bytes) {
  const out = new Uint8Array(bytes);
  globalThis.crypto.getRandomValues(out);
  return out;
}

/** @param {Uint8Array} bytes */
function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** @param {Uint8Array} bytes */
function base64url(bytes) {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/**
 * @param {unknown} models
 * @returns {string[] | null}
 */
function normalizeModels(models) {
  if (models === undefined || models === null) return null;
  if (!Array.isArray(models) || models.some((m) => typeof m !== "string" || !m.trim())) {
    throw new VaultError("`models` must be an array of model names (or omitted for all models)", {
      code: "invalid_models",
    });
  }
  const list = [...new Set(models.map((m) => m.trim()))];
  return list.length ? list : null;
}

/**
 * @param {unknown} scopes
 * @returns {string[] | null}
 */
function normalizeScopes(scopes) {
  if (scopes === undefined || scopes === null) return null;
  // Shape only: the vault decides which names it knows (a newer vault may know more).
  if (
    !Array.isArray(scopes) ||
    scopes.length === 0 ||
    scopes.some((s) => typeof s !== "string" || !/^[a-z_]{1,32}$/.test(s))
  ) {
    throw new VaultError(
      `\`scopes\` must be a non-empty array of scope names (${SCOPES.join(", ")}), or omitted for inference only`,
      { code: "invalid_scopes" },
    );
  }
  return [...new Set(scopes)];
}

const LIMIT_KEYS = ["rpm", "tpm", "max_concurrency", "budget", "models"];

/**
 * @param {unknown} limits
 * @returns {Record<string, unknown> | null}
 */
function normalizeLimits(limits) {
  if (limits === undefined || limits === null) return null;
  // Shape only: the vault checks the values (and keeps them within the plan).
  if (
    typeof limits !== "object" ||
    Array.isArray(limits) ||
    Object.keys(limits).some((k) => !LIMIT_KEYS.includes(k))
  ) {
    throw new VaultError(`\`limits\` must be an object with any of ${LIMIT_KEYS.join(", ")}`, {
      code: "invalid_limits",
    });
  }
  return JSON.parse(JSON.stringify(limits));
}

/**
 * @param {unknown} seconds
 * @returns {number | null}
 */
function normalizeExpiresIn(seconds) {
  if (seconds === undefined || seconds === null) return null;
  if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds <= 0) {
    throw new VaultError("`expiresIn` must be a number of seconds above zero", { code: "invalid_expires_in" });
  }
  return Math.round(seconds);
}

/**
 * What the person approved, from the vault's answer (null for what it doesn't say).
 * @param {any} data
 */
function approved(data) {
  return {
    limits: data && typeof data.limits === "object" ? data.limits : null,
    plan: data && typeof data.plan === "string" ? data.plan : null,
    expiresAt: data && typeof data.expiresAt === "string" ? data.expiresAt : null,
  };
}

/** @param {unknown} value @param {string} name */
function optionalString(value, name) {
  if (value === undefined || value === null || value === "") return null;
  if (typeof value !== "string") {
    throw new VaultError(`\`${name}\` must be a string`, { code: `invalid_${name.toLowerCase()}` });
  }
  return value;
}

// ------------------------------------------------------------------------ popup flow

/** @type {null | ((err: KeygateError) => void)} */
let cancelActive = null;

/**
 * Asks the person for access to OpenAI through their keygate vault.
 *
 * Popup mode (default): opens `VAULT/connect` in a popup synchronously, so call it directly
 * inside a click (or key) handler, before any `await`. Resolves to options for
 * `new OpenAI(...)`. Rejects with PopupBlockedError, UserDeniedError, PopupClosedError,
 * TimeoutError or VaultError; it never hangs.
 *
 * Redirect mode (`mode: "redirect"`, `redirectUri`): stores a PKCE verifier and state in
 * sessionStorage and sends this page to keygate; the returned promise never settles (the
 * page is leaving). On the `redirectUri` page, call completeRedirect().
 *
 * @param {import("./keygate").RequestOptions} options
 * @returns {Promise<import("./keygate").OpenAIAccess>}
 */
export function requestOpenAIAPI(options) {
  const opts = options || /** @type {any} */ ({});
  if (opts.mode === "redirect") return startRedirect(opts);
  if (opts.mode !== undefined && opts.mode !== "popup") {
    return Promise.reject(new VaultError('`mode` must be "popup" or "redirect"', { code: "invalid_mode" }));
  }

  // Everything before window.open is synchronous: the click's user activation must still
  // be there when the popup opens.
  /** @type {{origin: string, base: string}} */
  let vault;
  /** @type {{appName: string | null, models: string[] | null, scopes: string[] | null, plan: string | null, limits: Record<string, unknown> | null, expiresIn: number | null}} */
  let request;
  try {
    vault = parseVault(opts.vault);
    request = {
      appName: optionalString(opts.appName, "appName"),
      models: normalizeModels(opts.models),
      scopes: normalizeScopes(opts.scopes),
      plan: optionalString(opts.plan, "plan"),
      limits: normalizeLimits(opts.limits),
      expiresIn: normalizeExpiresIn(opts.expiresIn),
    };
  } catch (err) {
    return Promise.reject(err);
  }
  const requested = Number(opts.timeoutMs);
  const timeoutMs = Number.isFinite(requested) && requested > 0 ? requested : DEFAULT_TIMEOUT_MS;
  const nonce = toHex(randomBytes(16));
  const url = `${vault.base}/connect?mode=popup&nonce=${nonce}`;

  // A second request reuses the same named window: the first one is over.
  if (cancelActive) cancelActive(new PopupClosedError("A newer connection request replaced this one."));

  /** @type {Window | null} */
  let opened = null;
  try {
    opened = window.open(url, POPUP_NAME, POPUP_FEATURES);
  } catch {
    opened = null;
  }
  if (!opened) return Promise.reject(new PopupBlockedError());
  const popup = opened;

  return new Promise((resolve, reject) => {
    let settled = false;
    let closedSeenAt = 0;

    const cleanup = () => {
      settled = true;
      window.removeEventListener("message", onMessage);
      clearInterval(poll);
      clearTimeout(timer);
      if (opts.signal) opts.signal.removeEventListener("abort", onAbort);
      if (cancelActive === cancel) cancelActive = null;
    };
    /** @param {(v: any) => void} fn @param {any} value */
    const settle = (fn, value) => {
      if (settled) return;
      cleanup();
      fn(value);
    };
    const closePopup = () => {
      try {
        if (!popup.closed) popup.close();
      } catch {
        // a cross-origin window we may no longer touch
      }
    };
    /** @param {KeygateError} err */
    const cancel = (err) => settle(reject, err);

    /** @param {MessageEvent} event */
    function onMessage(event) {
      if (settled || event.source !== popup || event.origin !== vault.origin) return;
      const data = event.data;
      if (!data || typeof data !== "object" || data.nonce !== nonce || typeof data.type !== "string") return;
      switch (data.type) {
        case "keygate:hello":
          popup.postMessage({ type: "keygate:init", nonce, ...request }, vault.origin);
          break;
        case "keygate:result":
          if (typeof data.apiKey !== "string" || !data.apiKey || typeof data.baseURL !== "string" || !data.baseURL) {
            settle(reject, new VaultError("keygate sent an incomplete answer.", { code: "bad_response" }));
          } else {
            settle(resolve, {
              apiKey: data.apiKey,
              baseURL: data.baseURL,
              dangerouslyAllowBrowser: true,
              ...approved(data),
            });
          }
          break;
        case "keygate:denied":
          settle(reject, new UserDeniedError());
          break;
        case "keygate:error":
          settle(
            reject,
            new VaultError(typeof data.message === "string" && data.message ? data.message : "keygate reported an error.", {
              code: typeof data.code === "string" && data.code ? data.code : "vault_error",
            }),
          );
          closePopup();
          break;
        default:
          break;
      }
    }

    function onAbort() {
      closePopup();
      settle(reject, new PopupClosedError("The connection request was cancelled."));
    }

    const poll = setInterval(() => {
      let closed = false;
      try {
        closed = popup.closed;
      } catch {
        closed = true;
      }
      if (!closed) {
        closedSeenAt = 0;
        return;
      }
      if (!closedSeenAt) closedSeenAt = Date.now();
      else if (Date.now() - closedSeenAt >= CLOSE_GRACE_MS) settle(reject, new PopupClosedError());
    }, POLL_MS);

    const timer = setTimeout(() => {
      closePopup();
      settle(reject, new TimeoutError());
    }, timeoutMs);

    cancelActive = cancel;
    window.addEventListener("message", onMessage);
    if (opts.signal) {
      if (opts.signal.aborted) onAbort();
      else opts.signal.addEventListener("abort", onAbort, { once: true });
    }
  });
}

// ---------------------------------------------------------------------- redirect flow

/**
 * A PKCE pair: a random `verifier` (43 characters, base64url of 32 random bytes) and its
 * S256 `challenge` (base64url of SHA-256(verifier)). Keep the verifier secret until the
 * token exchange; send only the challenge to keygate.
 * @returns {Promise<{verifier: string, challenge: string}>}
 */
export async function createPkcePair() {
  const verifier = base64url(randomBytes(32));
  const digest = await globalThis.crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return { verifier, challenge: base64url(new Uint8Array(digest)) };
}

/**
 * The URL that starts a redirect-mode connection: send the person's browser there.
 * keygate answers at `redirectUri` with `?code=…&state=…` (or `?error=access_denied&state=…`).
 * @param {import("./keygate").ConnectURLOptions} options
 * @returns {string}
 */
export function buildConnectURL(options) {
  const { vault, redirectUri, state, codeChallenge } = options || /** @type {any} */ ({});
  const v = parseVault(vault);
  for (const [name, value] of [
    ["redirectUri", redirectUri],
    ["state", state],
    ["codeChallenge", codeChallenge],
  ]) {
    if (typeof value !== "string" || !value) {
      throw new VaultError(`\`${name}\` is required`, { code: "invalid_request" });
    }
  }
  const models = normalizeModels(options.models);
  const scopes = normalizeScopes(options.scopes);
  const appName = optionalString(options.appName, "appName");
  const plan = optionalString(options.plan, "plan");
  const limits = normalizeLimits(options.limits);
  const expiresIn = normalizeExpiresIn(options.expiresIn);
  const url = new URL(`${v.base}/connect`);
  const q = url.searchParams;
  q.set("response_type", "code");
  q.set("redirect_uri", redirectUri);
  q.set("state", state);
  q.set("code_challenge", codeChallenge);
  q.set("code_challenge_method", "S256");
  if (appName) q.set("app_name", appName);
  if (models) q.set("models", models.join(","));
  if (scopes) q.set("scopes", scopes.join(","));
  if (plan) q.set("plan", plan);
  if (limits) q.set("limits", JSON.stringify(limits));
  if (expiresIn) q.set("expires_in", String(expiresIn));
  return url.href;
}

/**
 * Exchanges a code for the key: `POST VAULT/api/connect/token`. Works on a server (Node 20+
 * has `fetch`) or in the app's page. A code works once; any attempt spends it.
 * @param {import("./keygate").ExchangeOptions} options
 * @returns {Promise<import("./keygate").TokenResult>}
 */
export async function exchangeCode(options) {
  const { vault, code, codeVerifier, redirectUri } = options || /** @type {any} */ ({});
  const v = parseVault(vault);
  if (typeof code !== "string" || !code || typeof codeVerifier !== "string" || !codeVerifier) {
    throw new VaultError("`code` and `codeVerifier` are required", { code: "invalid_request" });
  }
  const doFetch = options.fetch || globalThis.fetch;
  /** @type {Record<string, string>} */
  const body = { code, code_verifier: codeVerifier };
  if (redirectUri) body.redirect_uri = redirectUri;
  let res;
  try {
    res = await doFetch(`${v.base}/api/connect/token`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch (cause) {
    throw new VaultError(`Can't reach keygate at ${v.base}.`, { code: "network_error", cause });
  }
  const json = await answerJson(res);
  if (!json || typeof json.api_key !== "string" || typeof json.base_url !== "string") {
    throw new VaultError("keygate sent an incomplete answer.", { status: res.status, code: "bad_response" });
  }
  // What applies, when this keygate's answer carries the grant (else keyInfo() tells).
  const grant = json.grant && typeof json.grant === "object" ? json.grant : {};
  return {
    apiKey: json.api_key,
    baseURL: json.base_url,
    grantId: String(json.grant_id || grant.id || ""),
    ...approved({ limits: grant.limits, plan: grant.plan, expiresAt: grant.expires_at }),
  };
}

/** @param {any} opts @returns {Promise<never>} */
async function startRedirect(opts) {
  const vault = parseVault(opts.vault);
  if (typeof opts.redirectUri !== "string" || !opts.redirectUri) {
    throw new VaultError("`redirectUri` is required in redirect mode", { code: "invalid_request" });
  }
  const redirectUri = new URL(opts.redirectUri, window.location.href).href;
  const { verifier, challenge } = await createPkcePair();
  const state = toHex(randomBytes(16));
  const url = buildConnectURL({
    vault: vault.base,
    redirectUri,
    state,
    codeChallenge: challenge,
    appName: opts.appName,
    models: opts.models,
    scopes: opts.scopes,
    plan: opts.plan,
    limits: opts.limits,
    expiresIn: opts.expiresIn,
  });
  window.sessionStorage.setItem(
    STORAGE_PREFIX + state,
    JSON.stringify({ verifier, vault: vault.base, redirectUri, createdAt: Date.now() }),
  );
  window.location.assign(url);
  // The page is going away; nothing to resolve.
  return new Promise(() => {});
}

/**
 * On the `redirectUri` page: reads `code`, `state` (or `error`) from the address, checks the
 * state against the one this browser tab stored, exchanges the code and returns options for
 * `new OpenAI(...)`. Removes `code` and `state` from the address bar (unless `cleanURL` is false).
 * Throws UserDeniedError when the person said no, VaultError otherwise.
 * @param {import("./keygate").CompleteRedirectOptions} [options]
 * @returns {Promise<import("./keygate").RedirectAccess>}
 */
export async function completeRedirect(options = {}) {
  const location = new URL(options.url || window.location.href);
  const params = new URLSearchParams(location.search);
  const state = params.get("state") || "";
  const key = STORAGE_PREFIX + state;
  const raw = state ? window.sessionStorage.getItem(key) : null;
  if (state) window.sessionStorage.removeItem(key);
  if (options.cleanURL !== false && !options.url) {
    for (const name of ["code", "state", "error", "error_description"]) location.searchParams.delete(name);
    window.history.replaceState(window.history.state, "", location.href);
  }

  const error = params.get("error");
  if (error === "access_denied") throw new UserDeniedError();
  if (error) throw new VaultError(`keygate answered with an error: ${error}`, { code: error });

  let stored = null;
  try {
    stored = raw ? JSON.parse(raw) : null;
  } catch {
    stored = null;
  }
  if (!stored || typeof stored.verifier !== "string") {
    throw new VaultError(
      "This answer doesn't match a connection started in this tab (unknown or reused state). Start again.",
      { code: "state_mismatch" },
    );
  }
  const code = params.get("code");
  if (!code) throw new VaultError("keygate's answer has no code.", { code: "missing_code" });
  const vault = options.vault ? parseVault(options.vault).base : stored.vault;
  if (vault !== stored.vault) {
    throw new VaultError("This answer is for a different vault.", { code: "state_mismatch" });
  }
  const result = await exchangeCode({
    vault,
    code,
    codeVerifier: stored.verifier,
    redirectUri: stored.redirectUri,
    fetch: options.fetch,
  });
  return { ...result, dangerouslyAllowBrowser: true };
}

// ------------------------------------------------------------------------ key info

/**
 * The JSON of one of keygate's answers (`null` when it has none); an error answer is
 * thrown as a VaultError with keygate's own message and `code`.
 * @param {Response} res
 */
async function answerJson(res) {
  let json = null;
  try {
    json = await res.json();
  } catch {
    json = null;
  }
  if (!res.ok) {
    const err = json && typeof json === "object" ? json.error : null;
    throw new VaultError(
      (err && typeof err.message === "string" && err.message) || `keygate answered HTTP ${res.status}.`,
      { status: res.status, code: (err && typeof err.code === "string" && err.code) || "vault_error" },
    );
  }
  return json;
}

/**
 * What the key may do and what is left of it: `GET {baseURL}/key` with the key (keygate's
 * `/v1/key`; answered with CORS for the app's origin, never counted against its rate limit).
 * Resolves to `{id, name, origin, models, scopes, limits, expires_at, plan, usage: {period,
 * period_start, resets_at, requests, tokens, usd}, remaining: {usd, tokens}, rate_limit}`, e.g.
 * to show "you have $3.20 left this month". Throws VaultError with keygate's `status` and
 * `code` (401 `revoked_api_key` once the key is revoked, `invalid_api_key` once it is
 * disabled, rotated out or removed, `expired_api_key` once it expired).
 * @param {import("./keygate").KeyInfoOptions} options
 * @returns {Promise<import("./keygate").KeyInfo>}
 */
export async function keyInfo(options) {
  const { apiKey, baseURL } = options || /** @type {any} */ ({});
  if (typeof apiKey !== "string" || !apiKey || typeof baseURL !== "string" || !baseURL) {
    throw new VaultError("`apiKey` and `baseURL` are required", { code: "invalid_request" });
  }
  const doFetch = options.fetch || globalThis.fetch;
  const url = `${baseURL.replace(/\/+$/, "")}/key`;
  let res;
  try {
    res = await doFetch(url, {
      headers: { Authorization: `Bearer ${apiKey}`, Accept: "application/json" },
      credentials: "omit",
      cache: "no-store",
    });
  } catch (cause) {
    throw new VaultError(`Can't reach keygate at ${baseURL}.`, { code: "network_error", cause });
  }
  const json = await answerJson(res);
  if (!json || typeof json !== "object") {
    throw new VaultError("keygate sent an answer this SDK could not read.", { status: res.status, code: "bad_response" });
  }
  return json;
}
