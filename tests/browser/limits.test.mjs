// Issue 10 in a real browser: the person decides an app's limits at consent (the app asks for a
// budget, a rate and an expiry on keygate-testenv's "starter" plan; the person lowers the
// budget and the expiry, and the grant gets exactly that); and the dashboard's panel for one
// app: its limits in words and edited (keygate's refusal shown next to the field it names),
// usage and cost per day as a chart and a table after real proxied requests, what is left of
// the budget, rotating the key with a grace period (the old key still works right after),
// disabling and enabling it, and removing it from the list once revoked. Screenshots at 1280
// and 390 px.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import OpenAI from "openai";

import { TEST_KEY, Wallet, approveInPopup, openDemo, vaultFetch, waitForConsent, watch } from "./connect/helpers.mjs";
import {
  BASE_URL,
  FRESH_PASSKEY_REQUIRED,
  FRESH_WINDOW_SECS,
  PUBLIC_URL,
  addAuthenticator,
  advanceClock,
  assertClean,
  launch,
  nextAnswer,
  openPage,
  outlastFreshWindow,
  pageFetch,
  register,
  resetClock,
  screenshot,
} from "./lib.mjs";

const PHONE = [
  [1280, 860],
  [390, 844],
];
const DAY = 86_400;

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** GET {BASE_URL}/models with `key` from Node (no Origin, like a server): the HTTP status. */
async function models(key) {
  const res = await fetch(`${BASE_URL}/models`, { headers: { Authorization: `Bearer ${key}` } });
  const body = await res.json().catch(() => null);
  return { status: res.status, code: body?.error?.code ?? null };
}

test("consent: the person lowers the budget the app asks for, and the grant gets the lowered one", async () => {
  const wallet = new Wallet();
  const { context, page, problems } = await openDemo(browser);

  // The app asks for $5 a month, 30 requests a minute and a key for 30 days, on the starter
  // plan ($5 a month, 60 requests a minute, 4 at a time).
  const popupSeen = page.waitForEvent("popup");
  await page.evaluate(
    async ({ vault }) => {
      const k = await import(`${vault}/sdk/keygate.js`);
      window.__outcome = k
        .requestOpenAIAPI({
          vault,
          appName: "Budget bot",
          models: ["gpt-4o-mini"],
          plan: "starter",
          limits: { budget: { usd: 5, period: "month" }, rpm: 30 },
          expiresIn: 30 * 86400,
        })
        .then(
          (v) => ({ resolved: v }),
          (err) => ({ rejected: err.name, code: err.code, message: err.message }),
        );
    },
    { vault: PUBLIC_URL },
  );
  const popup = await popupSeen;
  popup.setDefaultTimeout(15_000);
  const popupProblems = watch(popup);
  const cdp = await popup.context().newCDPSession(popup);
  const authenticatorId = await wallet.attach(cdp);

  await popup.getByLabel("Your name").fill("Bea Budget");
  await popup.getByRole("button", { name: "Create account with a passkey" }).click();
  await popup.getByRole("heading", { name: "Add your OpenAI key" }).waitFor();
  await wallet.save(cdp, authenticatorId);
  await popup.getByLabel("OpenAI API key").fill(TEST_KEY);
  await popup.getByRole("button", { name: "Seal key and continue" }).click();
  await waitForConsent(popup);

  // What the app asks for, in plain words, and the plan's ceiling.
  assert.equal(
    (await popup.locator("#limits-asked-words").innerText()).trim(),
    "Up to $5 a month, 30 requests a minute, gpt-4o-mini only, model calls only, expires in 30 days",
  );
  assert.equal((await popup.locator("#plan-name").innerText()).trim(), "starter");
  assert.match(await popup.locator("#plan-hint").innerText(), /up to \$5 a month, 60 requests a minute, 4 requests at a time/);
  // The controls start at what the app asked for (the plan's 4 at a time, which it didn't lower).
  assert.equal(await popup.getByLabel("Budget", { exact: true }).inputValue(), "5");
  assert.equal(await popup.getByLabel("Requests a minute").inputValue(), "30");
  assert.equal(await popup.getByLabel("Requests at a time").inputValue(), "4");
  assert.deepEqual(
    await popup.locator("#limit-expiry option").allInnerTexts(),
    ["In 30 days (asked by the app)", "In 7 days", "In 1 day", "In 1 hour"],
    "the expiry can only be sooner",
  );

  // Above the plan is refused on the page, before any passkey prompt.
  let passkeyAsked = false;
  popup.on("request", (req) => {
    if (req.url().endsWith("/api/connect/approve/start")) passkeyAsked = true;
  });
  await popup.getByLabel("Budget", { exact: true }).fill("7");
  await popup.getByRole("button", { name: "Approve with passkey" }).click();
  assert.match(await popup.locator("#limit-usd-error").innerText(), /The plan allows at most \$5 a month/);
  assert.equal(await popup.getByLabel("Budget", { exact: true }).getAttribute("aria-invalid"), "true");
  assert.equal(passkeyAsked, false);

  // The person lowers the budget to $2 and the expiry to 7 days; the summary follows.
  await popup.getByLabel("Budget", { exact: true }).fill("2");
  await popup.getByLabel("Key expires").selectOption({ label: "In 7 days" });
  assert.equal(
    (await popup.locator("#limits-result-words").innerText()).trim(),
    "Up to $2 a month, 30 requests a minute, 4 requests at a time, expires in 7 days",
  );
  await screenshot(popup, "limits-01-consent-lowered", { sizes: PHONE });
  await assertClean(popup, popupProblems, "consent with limits");

  const before = Date.now();
  await approveInPopup(popup);

  // The SDK's result says what applies.
  const outcome = await page.evaluate(() => window.__outcome);
  assert.ok(outcome.resolved, JSON.stringify(outcome));
  const access = outcome.resolved;
  assert.match(access.apiKey, /^kg_/);
  assert.deepEqual(access.limits.budget, { usd: 2, tokens: null, period: "month" });
  assert.equal(access.limits.rpm, 30);
  assert.equal(access.limits.max_concurrency, 4);
  assert.equal(access.plan, "starter");
  const expiresIn = (Date.parse(access.expiresAt) - before) / 1000;
  assert.ok(Math.abs(expiresIn - 7 * DAY) < 120, `expires in ${expiresIn}s`);

  // And so does keygate: the grant holds the lowered budget.
  const grants = await vaultFetch(context, "GET", `${PUBLIC_URL}/api/grants`);
  const grant = grants.body.find((g) => g.name === "Budget bot");
  assert.deepEqual(grant.limits.budget, { usd: 2, tokens: null, period: "month" });
  assert.equal(grant.limits.rpm, 30);
  assert.equal(grant.plan, "starter");
  assert.equal(grant.expires_at, access.expiresAt);

  // The app can ask keygate what is left (the SDK's keyInfo: GET /v1/key, CORS for its origin).
  const info = await page.evaluate(
    async ({ vault, access }) => {
      const k = await import(`${vault}/sdk/keygate.js`);
      return k.keyInfo(access);
    },
    { vault: PUBLIC_URL, access },
  );
  assert.equal(info.name, "Budget bot");
  assert.deepEqual(info.limits.budget, { usd: 2, tokens: null, period: "month" });
  assert.equal(info.remaining.usd, 2);
  assert.equal(info.usage.period, "month");
  assert.equal(JSON.stringify(info).includes(access.apiKey), false, "never the secret");

  // The dashboard lists it in words, with its expiry.
  const dash = await context.newPage();
  const dashProblems = watch(dash);
  await dash.goto(`${PUBLIC_URL}/dashboard`);
  const row = dash.locator(`#grants-table tbody tr[data-grant-id="${grant.id}"]`);
  await row.waitFor();
  assert.deepEqual(await row.locator(".limit-list li").allInnerTexts(), [
    "Up to $2 a month",
    "30 requests a minute",
    "4 requests at a time",
  ]);
  assert.equal((await row.locator('td[data-label="Expires"]').innerText()).trim(), "In 7 days");
  assert.deepEqual(dashProblems, []);
  await assertClean(page, problems, "demo after connecting with limits");
  await context.close();
});

test("dashboard: edit limits, usage per day, rotate with grace, disable and enable, remove once revoked", async (t) => {
  const { context, page, cdp, problems } = await openPage(browser);
  await addAuthenticator(cdp);
  await register(page, "Lin Limits");
  await page.getByLabel("OpenAI API key").fill("sk-proj-limits-test-0000000000000000000000000000000Lim");
  await page.getByRole("button", { name: "Store key" }).click();
  await page.locator("#key-status").waitFor({ state: "visible" });

  // A key made on the dashboard: no plan, no limits.
  await page.getByRole("button", { name: "New key" }).click();
  await page.getByLabel("Name", { exact: true }).fill("Report writer");
  await page.getByRole("button", { name: "Create key" }).click();
  await page.locator("#new-key").waitFor({ state: "visible" });
  const firstKey = (await page.locator("#new-key-value").innerText()).trim();
  await page.getByRole("button", { name: "I’ve saved it" }).click();
  const row = page.locator("#grants-table tbody tr", { hasText: "Report writer" });
  assert.equal((await row.locator('td[data-label="Limits"]').innerText()).trim(), "No limits");
  assert.equal((await row.locator('td[data-label="Expires"]').innerText()).trim(), "Never");
  const grantId = await row.getAttribute("data-grant-id");

  // Some real traffic through the proxy with the official SDK.
  const openai = new OpenAI({ apiKey: firstKey, baseURL: BASE_URL, maxRetries: 0 });
  for (let i = 0; i < 3; i++) {
    const answer = await openai.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: `hi ${i}` }] });
    assert.equal(answer.choices[0].message.content, "Hello from the mock!");
  }

  await t.test("the panel: limits in words, edited, and keygate's refusal next to its field", async () => {
    await row.getByRole("button", { name: "Manage Report writer" }).click();
    const panel = page.locator("#grant-detail");
    await panel.getByRole("heading", { name: "Report writer" }).waitFor();
    assert.equal(await row.getByRole("button", { name: "Manage Report writer" }).getAttribute("aria-expanded"), "true");
    assert.match(await panel.locator("#gd-limit-words").innerText(), /No spending or rate limit/);
    assert.match(await panel.locator("#gd-limit-words").innerText(), /Never expires/);

    await panel.getByRole("button", { name: "Edit limits of Report writer" }).click();
    await panel.getByLabel("Dollars").fill("3");
    await panel.getByLabel("Requests a minute").fill("100");
    // A date in the past: keygate refuses it, naming expires_at; the page puts it by the field.
    await panel.getByLabel("Expires after").fill("2020-01-01");
    const patched = page.waitForRequest((req) => req.method() === "PATCH" && req.url().endsWith(`/api/grants/${grantId}`));
    await panel.getByRole("button", { name: "Save limits" }).click();
    const body = (await patched).postDataJSON();
    assert.deepEqual(body.limits, { rpm: 100, budget: { period: "month", usd: 3 } });
    await panel.locator("#gd-expires-error").waitFor({ state: "visible" });
    assert.equal(await panel.getByLabel("Expires after").getAttribute("aria-invalid"), "true");
    assert.ok((await panel.locator("#gd-expires-error").innerText()).trim().length > 5);
    await panel.locator("#gd-limits-form").screenshot({ path: `${process.env.KG_SCREENSHOT_DIR}/limits-02-edit-refused-1280.png` });

    // A date 10 days from now is taken; the limits apply from the next request.
    const soon = new Date(Date.now() + 10 * DAY * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    await panel.getByLabel("Expires after").fill(`${soon.getFullYear()}-${pad(soon.getMonth() + 1)}-${pad(soon.getDate())}`);
    await panel.getByRole("button", { name: "Save limits" }).click();
    await panel.getByRole("button", { name: "Edit limits of Report writer" }).waitFor();
    assert.match(await panel.locator("#gd-limit-words").innerText(), /Up to \$3 a month[\s\S]*100 requests a minute[\s\S]*Expires in 1[01] days/);
    await row.locator(".limit-list li", { hasText: "Up to $3 a month" }).waitFor();
    assert.match((await row.locator('td[data-label="Expires"]').innerText()).trim(), /^In 1[01] days$/);
    const grants = await pageFetch(page, "GET", "/api/grants");
    const g = grants.body.find((x) => x.id === grantId);
    assert.deepEqual(g.limits.budget, { usd: 3, tokens: null, period: "month" });
    assert.equal(g.limits.rpm, 100);
    assert.ok(g.expires_at);
  });

  let newKey;
  await t.test("rotating with a grace period: a new key once (after the passkey step-up), and the old one still works", async (st) => {
    const panel = page.locator("#grant-detail");
    await panel.getByLabel("The old key").selectOption({ label: "Keeps working 1 hour" });
    // The sign-in is older than keygate's fresh window: rotating asks for the passkey first.
    await outlastFreshWindow(st);
    const first = nextAnswer(page, "POST", `/api/grants/${grantId}/rotate`);
    await panel.getByRole("button", { name: "Rotate key" }).click();
    assert.deepEqual(await first, FRESH_PASSKEY_REQUIRED);
    const stepUp = page.getByRole("dialog", { name: "Confirm it’s you" });
    assert.match(await stepUp.innerText(), /A new key for “Report writer” replaces its current one/);
    const rotated = page.waitForResponse((res) => res.url().endsWith(`/api/grants/${grantId}/rotate`));
    await stepUp.getByRole("button", { name: "Use passkey" }).click();
    assert.equal((await rotated).status(), 200);
    await page.locator("#new-key").waitFor({ state: "visible" });
    newKey = (await page.locator("#new-key-value").innerText()).trim();
    assert.match(newKey, /^kg_/);
    assert.notEqual(newKey, firstKey);
    assert.match(await page.locator("#new-key-heading").innerText(), /New key for “Report writer”/);
    assert.match(await page.locator("#new-key-note").innerText(), /The old key keeps working until .+ \(1 hour\)/);
    await page.locator("#copy-key").click();
    await page.locator("#copy-key", { hasText: "Copied" }).waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), newKey);
    await screenshot(page, "limits-04-rotated", { sizes: PHONE });
    // Both keys work right after.
    assert.equal((await models(firstKey)).status, 200, "the old key works during the grace");
    assert.equal((await models(newKey)).status, 200, "the new key works");
    await page.getByRole("button", { name: "I’ve saved it" }).click();
    await page.locator("#grant-detail .gd-key .alert-info", { hasText: "previous key keeps working" }).waitFor();
  });

  await t.test("disable refuses the key, enable brings it back", async () => {
    const panel = page.locator("#grant-detail");
    await panel.getByRole("button", { name: "Disable" }).click();
    await row.locator(".badge-disabled").waitFor();
    assert.deepEqual(await models(newKey), { status: 401, code: "invalid_api_key" });
    await panel.getByRole("heading", { name: "Disabled" }).waitFor();
    await panel.getByRole("button", { name: "Enable" }).click();
    await row.locator(".badge-active").waitFor();
    assert.equal((await models(newKey)).status, 200);
  });

  await t.test("revoked: removable from the list", async () => {
    await row.getByRole("button", { name: "Revoke Report writer" }).click();
    const confirm = page.getByRole("dialog", { name: "Revoke “Report writer”?" });
    await confirm.getByRole("button", { name: "Revoke key" }).click();
    await confirm.waitFor({ state: "detached" });
    await row.locator(".badge-revoked").waitFor();
    assert.equal((await models(newKey)).status, 401);
    await screenshot(page, "limits-05-revoked", { sizes: PHONE });
    await row.getByRole("button", { name: "Remove Report writer" }).click();
    const dialog = page.getByRole("dialog", { name: "Remove “Report writer” from the list?" });
    await dialog.getByRole("button", { name: "Remove" }).click();
    await dialog.waitFor({ state: "detached" });
    await row.waitFor({ state: "detached" });
    const grants = await pageFetch(page, "GET", "/api/grants");
    assert.equal(grants.body.find((g) => g.id === grantId), undefined);
    await assertClean(page, problems, "dashboard after issue 10's lifecycle");
  });

  await t.test("a new key can start with a budget, a rate and an expiry", async () => {
    await page.getByRole("button", { name: "New key" }).click();
    await page.getByLabel("Name", { exact: true }).fill("Capped script");
    await page.getByLabel("Budget", { exact: true }).fill("1.5");
    await page.getByLabel("Budget period").selectOption("day");
    await page.getByLabel("Requests a minute").fill("20");
    await page.getByLabel("Key expires").selectOption({ label: "In 7 days" });
    const posted = page.waitForRequest((req) => req.url().endsWith("/api/grants") && req.method() === "POST");
    await page.getByRole("button", { name: "Create key" }).click();
    const body = (await posted).postDataJSON();
    assert.deepEqual(body.limits, { rpm: 20, budget: { period: "day", usd: 1.5 } });
    assert.ok(Math.abs(Date.parse(body.expires_at) - Date.now() - 7 * DAY * 1000) < 120_000, body.expires_at);
    await page.locator("#new-key").waitFor({ state: "visible" });
    await page.getByRole("button", { name: "I’ve saved it" }).click();
    const capped = page.locator("#grants-table tbody tr", { hasText: "Capped script" });
    assert.deepEqual(await capped.locator(".limit-list li").allInnerTexts(), ["Up to $1.50 a day", "20 requests a minute"]);
    assert.equal((await capped.locator('td[data-label="Expires"]').innerText()).trim(), "In 7 days");
  });

  await t.test("raising a limit asks for the passkey once more (keygate's step-up), lowering doesn't", async (st) => {
    // Past the fresh window of every passkey check so far (the rotation's included).
    st.after(resetClock);
    await advanceClock(3 * FRESH_WINDOW_SECS);
    const capped = page.locator("#grants-table tbody tr", { hasText: "Capped script" });
    await capped.getByRole("button", { name: "Manage Capped script" }).click();
    const panel = page.locator("#grant-detail");
    await panel.getByRole("button", { name: "Edit limits of Capped script" }).click();
    await panel.getByLabel("Dollars").fill("2");
    const id = await capped.getAttribute("data-grant-id");
    const first = nextAnswer(page, "PATCH", `/api/grants/${id}`);
    await panel.getByRole("button", { name: "Save limits" }).click();
    assert.deepEqual(await first, FRESH_PASSKEY_REQUIRED);
    const stepUp = page.getByRole("dialog", { name: "Confirm it’s you" });
    assert.match(await stepUp.innerText(), /Raising what “Capped script” may spend/);
    await stepUp.getByRole("button", { name: "Use passkey" }).click();
    await panel.getByRole("button", { name: "Edit limits of Capped script" }).waitFor();
    assert.match(await panel.locator("#gd-limit-words").innerText(), /Up to \$2 a day/);
    // Lowering never needs it: a plain 200 at once.
    await advanceClock(3 * FRESH_WINDOW_SECS);
    await panel.getByRole("button", { name: "Edit limits of Capped script" }).click();
    await panel.getByLabel("Dollars").fill("1");
    const second = nextAnswer(page, "PATCH", `/api/grants/${id}`);
    await panel.getByRole("button", { name: "Save limits" }).click();
    assert.equal((await second).status, 200);
    await panel.getByRole("button", { name: "Edit limits of Capped script" }).waitFor();
    assert.match(await panel.locator("#gd-limit-words").innerText(), /Up to \$1 a day/);
  });
  await context.close();
});
