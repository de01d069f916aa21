// Helpers for the "Sign in with OpenAI" browser tests (tests/browser/connect*.test.mjs):
// the demo app on its own origin, the connect popup with its own virtual authenticator
// sharing the person's passkey, a third-origin listener, and small HTTP servers.

import assert from "node:assert/strict";
import { createServer } from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { PUBLIC_URL, addAuthenticator } from "../lib.mjs";

export { PUBLIC_URL };
export const BASE_URL = `${PUBLIC_URL}/v1`;
export const DEMO_URL = (process.env.KG_DEMO_URL || "").replace(/\/+$/, "");
export const MOCK_URL = (process.env.KG_MOCK_URL || "").replace(/\/+$/, "");
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const SDK_PATH = path.join(ROOT, "web/sdk/keygate.js");
export const TEST_KEY = "sk-proj-connect-test-000000000000000000000000000000Demo";

if (!DEMO_URL) {
  throw new Error("KG_DEMO_URL is not set: run the suite with tests/browser/run.sh (keygate-testenv's demo_url)");
}
export const DEMO_ORIGIN = new URL(DEMO_URL).origin;
export const VAULT_ORIGIN = new URL(PUBLIC_URL).origin;

/** Console noise a page may log without anything being wrong. */
const EXPECTED_CONSOLE = [
  /Failed to load resource: the server responded with a status of (400|401|403|404|409|429)/,
];

/**
 * Collects page errors, console errors and CSP violations of `page` into `problems`
 * (the same rules as lib.mjs's openPage, for pages it didn't open: popups, the demo).
 */
export function watch(page, problems = []) {
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    const text = msg.text();
    if (EXPECTED_CONSOLE.some((re) => re.test(text))) return;
    problems.push(`console error: ${text}`);
  });
  return problems;
}

/** A new browser context (own cookies) at `width`, with the demo app loaded and ready. */
export async function openDemo(browser, { width = 1280, height = 860 } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const problems = watch(page);
  await page.goto(DEMO_URL);
  await page.locator("html[data-ready=true]").waitFor({ state: "attached" });
  return { context, page, problems };
}

/**
 * The person's passkeys, kept between pages: each popup is a new page with its own virtual
 * authenticator, which gets these credentials (WebAuthn.addCredential).
 */
export class Wallet {
  constructor() {
    /** @type {any[]} */
    this.credentials = [];
    this.uses = 0;
  }

  /**
   * Adds an authenticator to the page behind `cdp`, holding the wallet's credentials. Each
   * copy starts from a higher signature counter than any copy before it: keygate (rightly)
   * refuses an assertion whose counter did not go up, as from a cloned authenticator.
   */
  async attach(cdp) {
    await cdp.send("WebAuthn.enable", { enableUI: false });
    const authenticatorId = await addAuthenticator(cdp);
    this.uses += 1;
    for (const credential of this.credentials) {
      const signCount = (credential.signCount || 0) + this.uses * 1000;
      await cdp.send("WebAuthn.addCredential", { authenticatorId, credential: { ...credential, signCount } });
    }
    return authenticatorId;
  }

  /** Remembers the credentials an authenticator holds now (after a registration). */
  async save(cdp, authenticatorId) {
    const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
    this.credentials = credentials;
    return credentials.length;
  }
}

/**
 * Clicks `trigger` (a locator) in the app page and returns the popup it opened, with a CDP
 * session and an authenticator holding `wallet`'s passkeys.
 */
export async function openPopup(page, trigger, wallet) {
  const [popup] = await Promise.all([page.waitForEvent("popup"), trigger.click()]);
  popup.setDefaultTimeout(15_000);
  const problems = watch(popup);
  const cdp = await popup.context().newCDPSession(popup);
  const authenticatorId = await wallet.attach(cdp);
  return { popup, cdp, authenticatorId, problems };
}

/** Waits for the popup's consent screen. */
export async function waitForConsent(popup) {
  await popup.locator("#step-consent").waitFor({ state: "visible" });
}

/** The demo's notice once it says something: {text, error (data-error)}. */
export async function demoNotice(page, kind) {
  const box = page.locator(kind ? `#notice .notice-${kind}` : "#notice .notice");
  await box.waitFor({ state: "visible" });
  return { text: (await box.innerText()).trim(), error: (await box.getAttribute("data-error")) || "" };
}

/** Resolves when the page closed itself (window.close()). */
export async function waitForClose(page, timeout = 10_000) {
  if (page.isClosed()) return;
  await page.waitForEvent("close", { timeout });
}

/**
 * A small HTTP server on 127.0.0.1:0 (a different origin from keygate's localhost and from
 * the demo's port). `handler(req, res, url)` answers; returns {origin, close}.
 */
export async function startServer(handler) {
  const server = createServer((req, res) => {
    const url = new URL(req.url, "http://127.0.0.1");
    Promise.resolve(handler(req, res, url)).catch((err) => {
      if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" });
      res.end(String(err?.stack || err));
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

export function html(res, status, body, headers = {}) {
  res.writeHead(status, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store", ...headers });
  res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>test app</title></head><body>${body}</body></html>`);
}

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Calls keygate's API from inside a keygate page of `context` (its cookies). */
export async function vaultFetch(context, method, url, body) {
  let page = context.pages().find((p) => !p.isClosed() && p.url().startsWith(VAULT_ORIGIN));
  if (!page) {
    page = await context.newPage();
    await page.goto(`${PUBLIC_URL}/img/logo.svg`);
  }
  return page.evaluate(
    async ({ method, url, body }) => {
      const res = await fetch(url, {
        method,
        credentials: "same-origin",
        headers: body === undefined ? {} : { "Content-Type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      let parsed = null;
      try {
        parsed = text ? JSON.parse(text) : null;
      } catch {
        parsed = text;
      }
      return { status: res.status, body: parsed };
    },
    { method, url, body },
  );
}

/** Records every keygate key the page sends to the proxy (Authorization: Bearer kg_…). */
export function recordKeys(page) {
  const keys = [];
  page.on("request", (req) => {
    if (!req.url().startsWith(BASE_URL)) return;
    const auth = req.headers().authorization || "";
    const key = auth.replace(/^Bearer\s+/i, "");
    if (key && !keys.includes(key)) keys.push(key);
  });
  return keys;
}

/**
 * Chat through keygate from Node (no Origin header, like a server), or as `origin`:
 * {status, headers, body}.
 */
export async function rawChat(apiKey, { origin, model = "gpt-4o-mini" } = {}) {
  const headers = { authorization: `Bearer ${apiKey}`, "content-type": "application/json" };
  if (origin) headers.origin = origin;
  const res = await fetch(`${BASE_URL}/chat/completions`, {
    method: "POST",
    headers,
    body: JSON.stringify({ model, messages: [{ role: "user", content: "Say hello" }] }),
  });
  const text = await res.text();
  let body = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: res.status, headers: res.headers, body };
}

export function assertNoKeyIn(text, key, label) {
  assert.ok(!String(text).includes(key), `${label} must not contain the key`);
}

/**
 * Clicks "Approve with passkey" and waits for the popup to close itself; fails with the
 * popup's own error message when it shows one instead.
 */
export async function approveInPopup(popup) {
  await popup.getByRole("button", { name: "Approve with passkey" }).click();
  const closed = waitForClose(popup, 15_000).then(() => null);
  const error = popup
    .locator("#consent-notice .alert-error, #step-error:not([hidden]) #error-message")
    .first()
    .innerText({ timeout: 15_000 })
    .catch(() => null);
  const message = await Promise.race([closed, error]);
  if (message) assert.fail(`the popup showed an error instead of closing: ${message}`);
  await closed;
}
