// keygate's JS SDK (web/sdk/keygate.js) on its own: its TypeScript declarations type-check
// with the official `openai` package; its PKCE and URL helpers and token exchange in Node; and
// in the browser, the popup flow's failure modes: a blocked popup, a bad vault URL, a timeout,
// an abort, forged messages that must be ignored, and the connect page opened without an app.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";

import { chromium } from "playwright-core";

import { assertClean, launch, screenshot } from "./lib.mjs";
import { DEMO_URL, PUBLIC_URL, ROOT, SDK_PATH, demoNotice, openDemo, watch } from "./connect/helpers.mjs";

const sdk = await import(SDK_PATH);
const HERE = path.join(ROOT, "tests/browser");

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

function tsc(project) {
  const bin = path.join(HERE, "node_modules/.bin/tsc");
  const run = spawnSync(bin, ["--noEmit", "-p", project], { cwd: HERE, encoding: "utf8" });
  return { status: run.status, output: `${run.stdout}${run.stderr}`.trim() };
}

test("the SDK's declarations type-check with the official openai package (tsc --noEmit)", () => {
  const usage = tsc("connect/tsconfig.json");
  assert.equal(usage.status, 0, usage.output);
  const js = tsc("connect/tsconfig.sdk-js.json");
  assert.equal(js.status, 0, `keygate.js against its JSDoc and keygate.d.ts:\n${js.output}`);
});

test("the SDK's package.json is ready to publish", () => {
  const pkg = JSON.parse(readFileSync(path.join(ROOT, "web/sdk/package.json"), "utf8"));
  assert.equal(pkg.name, "keygate");
  assert.match(pkg.version, /^\d+\.\d+\.\d+$/);
  assert.equal(pkg.type, "module");
  assert.equal(pkg.license, "Apache-2.0");
  assert.equal(pkg.types, "./keygate.d.ts");
  assert.deepEqual(pkg.exports["."], { types: "./keygate.d.ts", default: "./keygate.js" });
  for (const file of pkg.files) readFileSync(path.join(ROOT, "web/sdk", file));
  assert.equal(sdk.VERSION, pkg.version, "VERSION in keygate.js matches package.json");
});

test("errors are typed and all extend KeygateError", () => {
  const cases = [
    [sdk.PopupBlockedError, "popup_blocked"],
    [sdk.UserDeniedError, "access_denied"],
    [sdk.PopupClosedError, "popup_closed"],
    [sdk.TimeoutError, "timeout"],
  ];
  for (const [Class, code] of cases) {
    const err = new Class();
    assert.ok(err instanceof sdk.KeygateError && err instanceof Error);
    assert.equal(err.name, Class.name);
    assert.equal(err.code, code);
    assert.ok(err.message.length > 10);
  }
  const vault = new sdk.VaultError("boom", { status: 400, code: "invalid_grant" });
  assert.ok(vault instanceof sdk.KeygateError);
  assert.deepEqual([vault.name, vault.status, vault.code], ["VaultError", 400, "invalid_grant"]);
});

test("createPkcePair makes an S256 pair", async () => {
  const seen = new Set();
  for (let i = 0; i < 20; i++) {
    const { verifier, challenge } = await sdk.createPkcePair();
    assert.match(verifier, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(challenge, createHash("sha256").update(verifier).digest("base64url"));
    assert.ok(!seen.has(verifier));
    seen.add(verifier);
  }
});

test("buildConnectURL builds the redirect-mode request", () => {
  const url = new URL(
    sdk.buildConnectURL({
      vault: `${PUBLIC_URL}/`,
      redirectUri: "https://app.example/cb?x=1",
      state: "st",
      codeChallenge: "c".repeat(43),
      appName: "My app",
      models: ["gpt-4o-mini", "gpt-4o"],
      plan: "starter",
    }),
  );
  assert.equal(`${url.origin}${url.pathname}`, `${PUBLIC_URL}/connect`);
  assert.deepEqual(Object.fromEntries(url.searchParams), {
    response_type: "code",
    redirect_uri: "https://app.example/cb?x=1",
    state: "st",
    code_challenge: "c".repeat(43),
    code_challenge_method: "S256",
    app_name: "My app",
    models: "gpt-4o-mini,gpt-4o",
    plan: "starter",
  });
  assert.throws(() => sdk.buildConnectURL({ vault: "nope", redirectUri: "x", state: "s", codeChallenge: "c" }), sdk.VaultError);
  assert.throws(() => sdk.buildConnectURL({ vault: PUBLIC_URL, redirectUri: "", state: "s", codeChallenge: "c" }), sdk.VaultError);
});

test("limits and expiresIn: checked for shape, carried in the redirect URL", () => {
  const url = new URL(
    sdk.buildConnectURL({
      vault: PUBLIC_URL,
      redirectUri: "https://app.example/cb",
      state: "st",
      codeChallenge: "c".repeat(43),
      plan: "starter",
      limits: { budget: { usd: 5, period: "month" }, rpm: 60 },
      expiresIn: 30 * 86400,
    }),
  );
  assert.deepEqual(JSON.parse(url.searchParams.get("limits")), { budget: { usd: 5, period: "month" }, rpm: 60 });
  assert.equal(url.searchParams.get("expires_in"), String(30 * 86400));
  const base = { vault: PUBLIC_URL, redirectUri: "https://app.example/cb", state: "st", codeChallenge: "c" };
  for (const [limits, expiresIn, code] of [
    [[1], undefined, "invalid_limits"],
    ["5 dollars", undefined, "invalid_limits"],
    [{ budgets: {} }, undefined, "invalid_limits"],
    [undefined, -1, "invalid_expires_in"],
    [undefined, "30d", "invalid_expires_in"],
  ]) {
    assert.throws(
      () => sdk.buildConnectURL({ ...base, limits, expiresIn }),
      (err) => err instanceof sdk.VaultError && err.code === code,
      JSON.stringify({ limits, expiresIn }),
    );
  }
});

test("keyInfo reads /v1/key with the key, and turns refusals into VaultError", async () => {
  const calls = [];
  const fake = async (url, init) => {
    calls.push({ url, auth: init.headers.Authorization });
    if (init.headers.Authorization === "Bearer kg_good") {
      return new Response(JSON.stringify({ name: "App", remaining: { usd: 3.2, tokens: null } }), { status: 200 });
    }
    return new Response(JSON.stringify({ error: { message: "Invalid API key", code: "invalid_api_key" } }), { status: 401 });
  };
  const info = await sdk.keyInfo({ apiKey: "kg_good", baseURL: "https://vault.example/v1/", fetch: fake });
  assert.equal(info.remaining.usd, 3.2);
  assert.deepEqual(calls[0], { url: "https://vault.example/v1/key", auth: "Bearer kg_good" });
  await assert.rejects(sdk.keyInfo({ apiKey: "kg_bad", baseURL: "https://vault.example/v1", fetch: fake }), (err) => {
    assert.ok(err instanceof sdk.VaultError);
    assert.deepEqual([err.status, err.code], [401, "invalid_api_key"]);
    return true;
  });
  await assert.rejects(sdk.keyInfo({ apiKey: "", baseURL: "x" }), sdk.VaultError);
});

test("exchangeCode turns keygate's refusals into VaultError with status and code", async () => {
  const { verifier } = await sdk.createPkcePair();
  await assert.rejects(sdk.exchangeCode({ vault: PUBLIC_URL, code: "not-a-real-code", codeVerifier: verifier }), (err) => {
    assert.ok(err instanceof sdk.VaultError);
    assert.equal(err.status, 400);
    assert.equal(err.code, "invalid_grant");
    return true;
  });
  await assert.rejects(sdk.exchangeCode({ vault: "ftp://x", code: "c", codeVerifier: verifier }), sdk.VaultError);
  await assert.rejects(sdk.exchangeCode({ vault: "http://127.0.0.1:9", code: "c", codeVerifier: verifier }), (err) => {
    assert.equal(err.code, "network_error");
    return true;
  });
});

/** Runs `fn({vault, ...args})` in the demo page (fn imports the SDK from the vault itself). */
function inPage(page, fn, args = {}) {
  return page.evaluate(fn, { vault: PUBLIC_URL, ...args });
}

test("in the browser: a bad vault URL is a VaultError and opens nothing", async () => {
  const { context, page } = await openDemo(browser);
  let popups = 0;
  page.on("popup", () => popups++);
  const out = await inPage(page, async ({ vault: good }) => {
    const k = await import(`${good}/sdk/keygate.js`);
    const results = [];
    for (const vault of ["", "not a url", "javascript:alert(1)", "https://user:pw@vault.example"]) {
      try {
        await k.requestOpenAIAPI({ vault });
        results.push("resolved");
      } catch (err) {
        results.push(`${err.name}:${err.code}:${err instanceof k.KeygateError}`);
      }
    }
    try {
      await k.requestOpenAIAPI({ vault: "https://vault.example", models: "gpt-4o" });
    } catch (err) {
      results.push(`${err.name}:${err.code}`);
    }
    return results;
  });
  assert.deepEqual(out, [
    "VaultError:invalid_vault:true",
    "VaultError:invalid_vault:true",
    "VaultError:invalid_vault:true",
    "VaultError:invalid_vault:true",
    "VaultError:invalid_models",
  ]);
  assert.equal(popups, 0);
  await context.close();
});

test("in the browser: a popup that is never finished times out, and is closed", async () => {
  const { context, page } = await openDemo(browser);
  const popupSeen = page.waitForEvent("popup");
  const result = inPage(page, async ({ vault }) => {
    const k = await import(`${vault}/sdk/keygate.js`);
    const started = performance.now();
    try {
      await k.requestOpenAIAPI({ vault, timeoutMs: 1500 });
      return "resolved";
    } catch (err) {
      return { name: err.name, elapsed: performance.now() - started };
    }
  });
  const popup = await popupSeen;
  const out = await result;
  assert.equal(out.name, "TimeoutError");
  assert.ok(out.elapsed >= 1400 && out.elapsed < 5000, `timed out after ${out.elapsed} ms`);
  if (!popup.isClosed()) await popup.waitForEvent("close", { timeout: 5000 });
  await context.close();
});

test("in the browser: an AbortSignal cancels the request and closes the popup", async () => {
  const { context, page } = await openDemo(browser);
  const popupSeen = page.waitForEvent("popup");
  const result = inPage(page, async ({ vault }) => {
    const k = await import(`${vault}/sdk/keygate.js`);
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 500);
    try {
      await k.requestOpenAIAPI({ vault, signal: controller.signal });
      return "resolved";
    } catch (err) {
      return `${err.name}:${err.code}`;
    }
  });
  const popup = await popupSeen;
  assert.equal(await result, "PopupClosedError:popup_closed");
  if (!popup.isClosed()) await popup.waitForEvent("close", { timeout: 5000 });
  await context.close();
});

test("in the browser: forged answers are ignored (wrong source, origin or nonce)", async () => {
  const { context, page } = await openDemo(browser);
  const popupSeen = page.waitForEvent("popup");
  await page.evaluate(async (vault) => {
    const k = await import(`${vault}/sdk/keygate.js`);
    window.__outcome = k.requestOpenAIAPI({ vault }).then(
      (v) => ({ resolved: v }),
      (err) => ({ rejected: err.name }),
    );
  }, PUBLIC_URL);
  const popup = await popupSeen;
  await popup.locator("#step-signin").waitFor({ state: "visible" });
  const nonce = new URL(popup.url()).searchParams.get("nonce");

  // From the app's own window (not the popup, not the vault's origin), with the right nonce.
  await page.evaluate((nonce) => {
    window.postMessage({ type: "keygate:result", nonce, apiKey: "kg_forged", baseURL: "https://evil.example/v1" }, "*");
  }, nonce);
  // From the popup (the vault's origin) but with another nonce.
  await popup.evaluate(() => {
    window.opener.postMessage({ type: "keygate:result", nonce: "0".repeat(32), apiKey: "kg_forged", baseURL: "x" }, "*");
    window.opener.postMessage({ type: "keygate:denied", nonce: "1".repeat(32) }, "*");
  });
  await page.waitForTimeout(500);
  assert.equal(await page.evaluate(() => Promise.race([window.__outcome, Promise.resolve("pending")])), "pending");

  // Closing the popup settles it as closed: nothing forged got through.
  await popup.close();
  assert.deepEqual(await page.evaluate(() => window.__outcome), { rejected: "PopupClosedError" });
  await context.close();
});

test("in the browser: a real popup blocker gives PopupBlockedError, and the demo offers the redirect flow", async () => {
  // Playwright turns Chromium's popup blocker off; this browser keeps it on.
  const strict = await chromium.launch({
    executablePath: process.env.KG_CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic"],
    ignoreDefaultArgs: ["--disable-popup-blocking"],
  });
  try {
    const { context, page, problems } = await openDemo(strict);
    // A click without user activation: exactly the case of an app that awaits something
    // before calling requestOpenAIAPI(). (Playwright's evaluate carries a user gesture, so
    // spend it on a first window.open before clicking.)
    const opened = await page.evaluate(() => {
      window.open("about:blank", "spend-the-gesture", "popup")?.close();
      document.querySelector("#connect").click();
      return navigator.userActivation.isActive;
    });
    assert.equal(opened, false);
    const notice = await demoNotice(page, "error");
    assert.equal(notice.error, "PopupBlockedError");
    assert.match(notice.text, /blocked the keygate window/);
    await page.getByRole("button", { name: "Connect in this tab" }).waitFor();
    await screenshot(page, "connect-10-demo-popup-blocked");
    await assertClean(page, problems, "demo popup blocked");

    // The offered way out goes to keygate's redirect flow.
    await page.getByRole("button", { name: "Connect in this tab" }).click();
    await page.waitForURL((url) => url.href.startsWith(`${PUBLIC_URL}/connect?response_type=code`));
    await context.close();
  } finally {
    await strict.close();
  }
});

test("the connect page opened without an app says so", async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  const problems = watch(page);

  // No window.opener (as behind Cross-Origin-Opener-Policy): a clear error.
  await page.goto(`${PUBLIC_URL}/connect?mode=popup&nonce=${"a".repeat(32)}`);
  await page.getByRole("heading", { name: "Can't reach the app" }).waitFor();
  assert.match(await page.locator("#error-hint").innerText(), /redirect flow/);
  await screenshot(page, "connect-11-popup-no-opener");
  await assertClean(page, problems, "popup without opener");

  // A bad nonce, and no mode at all.
  await page.goto(`${PUBLIC_URL}/connect?mode=popup&nonce=short`);
  await page.getByText("This link is incomplete").waitFor();
  await page.goto(`${PUBLIC_URL}/connect`);
  await page.getByRole("heading", { name: "Nothing to connect" }).waitFor();
  await context.close();
});

test("the demo page serves the SDK from the vault and the openai bundle from itself", async () => {
  const res = await fetch(`${PUBLIC_URL}/sdk/keygate.js`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("access-control-allow-origin"), "*");
  assert.match(res.headers.get("content-type"), /javascript/);
  assert.equal(await res.text(), readFileSync(SDK_PATH, "utf8"));
  const bundle = await fetch(`${DEMO_URL}/vendor/openai.mjs`);
  assert.equal(bundle.status, 200);
  const csp = (await fetch(DEMO_URL)).headers.get("content-security-policy");
  assert.match(csp, new RegExp(`script-src 'self' ${new URL(PUBLIC_URL).origin}`));
  assert.doesNotMatch(csp, /unsafe-inline|\*/);
});
