// Shared helpers for the browser suite: Chromium via playwright-core, a CDP virtual passkey
// authenticator per page, screenshots at desktop and phone width, and checks that the pages
// never trip the Content-Security-Policy or throw.

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";

import { chromium } from "playwright-core";

export const PUBLIC_URL = required("KG_PUBLIC_URL").replace(/\/+$/, "");
export const BASE_URL = `${PUBLIC_URL}/v1`;
const SCREENSHOT_DIR = process.env.KG_SCREENSHOT_DIR || path.resolve("tests/.artifacts/screenshots");
const CHROMIUM = process.env.KG_CHROMIUM || "/usr/bin/chromium";

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the suite with tests/browser/run.sh`);
  return value;
}

export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-quic",
    ],
  });
}

/**
 * A fresh browser context and page (own cookies) with WebAuthn enabled over CDP.
 * `problems` collects page errors and console errors that are not expected HTTP failures
 * (the pages call /api/me and expect 401 sometimes); CSP violations always count.
 */
export async function openPage(browser, { width = 1280, height = 860, colorScheme = "light" } = {}) {
  const context = await browser.newContext({
    baseURL: PUBLIC_URL,
    viewport: { width, height },
    colorScheme,
    deviceScaleFactor: 1,
  });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: PUBLIC_URL });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const problems = [];
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    const text = msg.text();
    if (/Failed to load resource: the server responded with a status of (401|403|404|409|400)/.test(text)) {
      return;
    }
    problems.push(`console error: ${text}`);
  });
  // Pages, styles, scripts and images must all load: only the API may answer 4xx.
  page.on("response", (res) => {
    const url = new URL(res.url());
    if (url.origin === PUBLIC_URL && !url.pathname.startsWith("/api/") && res.status() >= 400) {
      problems.push(`HTTP ${res.status()} for ${url.pathname}`);
    }
  });
  page.on("requestfailed", (req) => {
    const url = new URL(req.url());
    if (url.origin === PUBLIC_URL && !url.pathname.startsWith("/api/")) {
      // A navigation away can abort pending loads; that is not a broken page.
      if (req.failure()?.errorText === "net::ERR_ABORTED") return;
      problems.push(`request failed: ${url.pathname} (${req.failure()?.errorText})`);
    }
  });
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable", { enableUI: false });
  return { context, page, cdp, problems };
}

/** A platform passkey authenticator (CTAP2, internal, resident keys, user verification). */
export async function addAuthenticator(cdp, overrides = {}) {
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      transport: "internal",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
      ...overrides,
    },
  });
  return authenticatorId;
}

export async function removeAuthenticator(cdp, authenticatorId) {
  await cdp.send("WebAuthn.removeVirtualAuthenticator", { authenticatorId });
}

export async function credentialCount(cdp, authenticatorId) {
  const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
  return credentials.length;
}

/**
 * Screenshots at 1280 and 375 px wide: NAME-1280.png and NAME-375.png. Full page by default
 * (scrolled to the top, toasts dismissed so they don't cover the content); `fullPage: false`
 * for modal dialogs, which belong to the viewport. `sizes`: other [width, height] pairs.
 */
export async function screenshot(
  page,
  name,
  {
    fullPage = true,
    sizes = [
      [1280, 860],
      [375, 812],
    ],
  } = {},
) {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  const original = page.viewportSize();
  const files = [];
  if (fullPage) {
    await page.evaluate(() => {
      for (const t of document.querySelectorAll(".toast")) t.remove();
      window.scrollTo(0, 0);
    });
  }
  for (const [width, height] of sizes) {
    await page.setViewportSize({ width, height });
    await page.evaluate(() => document.fonts.ready);
    await page.waitForTimeout(150);
    const file = path.join(SCREENSHOT_DIR, `${name}-${width}.png`);
    await page.screenshot({ path: file, fullPage, animations: "disabled", caret: "hide" });
    files.push(file);
  }
  if (original) await page.setViewportSize(original);
  return files;
}

/** Fails when the page logged errors or CSP violations, or has horizontal overflow at 375 px. */
export async function assertClean(page, problems, label) {
  assert.deepEqual(problems, [], `${label}: the page logged problems`);
  const original = page.viewportSize();
  await page.setViewportSize({ width: 375, height: 812 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (original) await page.setViewportSize(original);
  assert.ok(overflow <= 0, `${label}: the page is ${overflow}px wider than a 375px phone screen`);
}

/** The dashboard once it finished loading. */
export async function waitForDashboard(page) {
  await page.waitForURL(/\/dashboard$/);
  await page.locator("#content").waitFor({ state: "visible" });
}

/** Text of an aria-live region once it says something. */
export async function liveText(page, selector) {
  const region = page.locator(selector);
  await region.locator(".alert").first().waitFor({ state: "visible" });
  return (await region.innerText()).trim();
}

/** Creates an account from the sign-in page; the page ends on the dashboard. */
export async function register(page, name) {
  await page.goto("/login");
  await page.getByLabel("Your name").fill(name);
  await page.getByRole("button", { name: "Create account with a passkey" }).click();
  await waitForDashboard(page);
}

/** Calls the API from inside the page (same origin, its cookies): {status, body}. */
export async function pageFetch(page, method, url, body) {
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

/** keygate's fresh window: how long a passkey check counts for sensitive changes (300 s). */
export const FRESH_WINDOW_SECS = 300;

/**
 * Moves keygate-testenv's clock `secs` seconds forward (POST {KG_CONTROL_URL}/advance). The clock
 * is the whole testenv's: put it back with resetClock() when the test ends.
 */
export async function advanceClock(secs) {
  const res = await fetch(`${required("KG_CONTROL_URL")}/advance?secs=${secs}`, { method: "POST" });
  assert.equal(res.status, 204, `moving keygate's clock forward: HTTP ${res.status}`);
}

/**
 * Takes keygate-testenv's clock back to the system time (POST {KG_CONTROL_URL}/reset), so later
 * tests see keygate's times as the browser does ("Just now", not "In 5 minutes").
 */
export async function resetClock() {
  const res = await fetch(`${required("KG_CONTROL_URL")}/reset`, { method: "POST" });
  assert.equal(res.status, 204, `resetting keygate's clock: HTTP ${res.status}`);
}

const resetAfter = new WeakSet();

/**
 * Makes every session's last passkey check too old for a sensitive change: keygate's clock moves
 * past the fresh window. `t` is the running test (node:test's context): the clock is reset after it.
 */
export async function outlastFreshWindow(t) {
  if (!resetAfter.has(t)) {
    resetAfter.add(t);
    t.after(resetClock);
  }
  await advanceClock(FRESH_WINDOW_SECS + 1);
}

/**
 * keygate's answer to the page's next `method` request to `path`: {status, code}. Start waiting
 * before the click that sends it.
 */
export function nextAnswer(page, method, path) {
  return page
    .waitForResponse((res) => res.request().method() === method && new URL(res.url()).pathname === path)
    .then(async (res) => {
      const body = await res.json().catch(() => null);
      return { status: res.status(), code: body?.error?.code ?? null };
    });
}

/** keygate's answer when a sensitive change needs a fresh passkey check. */
export const FRESH_PASSKEY_REQUIRED = { status: 403, code: "fresh_passkey_required" };

export function uniqueName(prefix) {
  return `${prefix} ${Math.random().toString(36).slice(2, 7)}`;
}
