// The dashboard after issue 9, in a real browser: choosing what a new key may do (scopes) and
// reading it back in plain words; the copy-once panel's JavaScript, Python and curl snippets
// (the curl one is run for real); the stored key's status as OpenAI sees it (verified, not yet
// verified, refused after a proxied request met OpenAI's refusal — with the banner and its
// "Replace key"); the passkey step-up (keygate's own 403 once its clock is past the fresh window) for storing
// the first key, creating a key and adding a passkey; and the signed-in devices, ending one and
// signing out everywhere else right after signing in.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { after, before, test } from "node:test";
import { promisify } from "node:util";

import { SCOPES } from "../../web/js/scopes.js";
import { MOCK_URL, Wallet } from "./connect/helpers.mjs";
import {
  BASE_URL,
  FRESH_PASSKEY_REQUIRED,
  addAuthenticator,
  assertClean,
  credentialCount,
  launch,
  liveText,
  nextAnswer,
  openPage,
  outlastFreshWindow,
  pageFetch,
  register,
  removeAuthenticator,
  screenshot,
  waitForDashboard,
} from "./lib.mjs";

const run = promisify(execFile);
const WORDS = Object.fromEntries(SCOPES.map((s) => [s.id, s.words]));

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** A signed-in person on the dashboard, with their page, CDP session and authenticator. */
async function signedIn(name, pageOptions) {
  const opened = await openPage(browser, pageOptions);
  const authenticatorId = await addAuthenticator(opened.cdp);
  await register(opened.page, name);
  return { ...opened, authenticatorId };
}

async function storeKey(page, key) {
  await page.getByLabel("OpenAI API key").fill(key);
  await page.getByRole("button", { name: /^(Store|Replace) key$/ }).click();
  await page.locator("#key-status").waitFor({ state: "visible" });
}

/** Records the passkey-check calls the page makes. */
function recordReauth(page) {
  const calls = [];
  page.on("request", (req) => {
    if (req.url().includes("/api/auth/reauth/")) calls.push(new URL(req.url()).pathname);
  });
  return calls;
}

test("a new key: choose what it may do, read it back in words, and copy code that works", async () => {
  const { context, page, problems } = await signedIn("Ada Scopes");
  await storeKey(page, "sk-proj-scopes-test-00000000000000000000000000000Scop");

  await page.getByRole("button", { name: "New key" }).click();
  const boxes = page.locator("#grant-scopes input[name=scope]");
  assert.deepEqual(
    await boxes.evaluateAll((els) => els.map((e) => [e.value, e.checked])),
    [
      ["inference", true],
      ["files", false],
      ["batches", false],
      ["fine_tuning", false],
      ["assistants", false],
      ["stored", false],
    ],
    "models only by default",
  );
  // Each choice is labelled with its plain words.
  await page.getByRole("checkbox", { name: new RegExp(WORDS.files) }).waitFor();

  // Nothing ticked is refused on the page.
  await page.getByLabel("Name", { exact: true }).fill("File sorter");
  await page.getByRole("checkbox", { name: /^Use models/ }).uncheck();
  await page.getByRole("button", { name: "Create key" }).click();
  assert.match(await liveText(page, "#grants-msg"), /Choose at least one thing the app may do/);

  await page.getByRole("checkbox", { name: /^Use models/ }).check();
  await page.getByRole("checkbox", { name: /^Files/ }).check();
  await screenshot(page, "dash-01-new-key-scopes");
  const posted = page.waitForRequest((req) => req.url().endsWith("/api/grants") && req.method() === "POST");
  await page.getByRole("button", { name: "Create key" }).click();
  assert.deepEqual((await posted).postDataJSON(), { name: "File sorter", scopes: ["inference", "files"] });

  // The copy-once panel: three snippets with the real key and base URL.
  await page.locator("#new-key").waitFor({ state: "visible" });
  const apiKey = (await page.locator("#new-key-value").innerText()).trim();
  assert.match(apiKey, /^kg_/);
  const tabs = page.getByRole("tablist").getByRole("tab");
  assert.deepEqual(await tabs.allInnerTexts(), ["JavaScript", "Python", "curl"]);
  assert.equal(await page.getByRole("tab", { name: "JavaScript" }).getAttribute("aria-selected"), "true");
  const code = page.locator("#new-key-snippet");
  let text = await code.innerText();
  assert.ok(text.includes(`apiKey: "${apiKey}"`) && text.includes(`baseURL: "${BASE_URL}"`), text);

  await page.getByRole("tab", { name: "Python" }).click();
  text = await code.innerText();
  assert.ok(text.includes("from openai import OpenAI"), text);
  assert.ok(text.includes(`api_key="${apiKey}"`) && text.includes(`base_url="${BASE_URL}"`), text);
  // Arrow keys move between the tabs.
  await page.getByRole("tab", { name: "Python" }).press("ArrowRight");
  assert.equal(await page.getByRole("tab", { name: "curl" }).getAttribute("aria-selected"), "true");
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), "curl");
  const curl = await code.innerText();
  assert.ok(curl.startsWith(`curl ${BASE_URL}/chat/completions`), curl);
  assert.ok(curl.includes(`Authorization: Bearer ${apiKey}`), curl);

  // What "Copy" puts on the clipboard is the snippet shown...
  await page.locator("#copy-snippet").click();
  await page.locator("#copy-snippet", { hasText: "Copied" }).waitFor();
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  assert.equal(copied, curl);
  // ...and it works, pasted into a shell.
  const { stdout } = await run("bash", ["-c", copied], { timeout: 20_000 });
  assert.equal(JSON.parse(stdout).choices[0].message.content, "Hello from the mock!");
  await screenshot(page, "dash-02-new-key-curl");
  await assertClean(page, problems, "new key with scopes");

  // The table says what the key may do, in words.
  await page.getByRole("button", { name: "I’ve saved it" }).click();
  const row = page.locator("#grants-table tbody tr", { hasText: "File sorter" });
  assert.deepEqual(await row.locator(".scope-list li").allInnerTexts(), [WORDS.inference, WORDS.files]);
  const grants = await pageFetch(page, "GET", "/api/grants");
  assert.deepEqual(grants.body.find((g) => g.name === "File sorter").scopes, ["inference", "files"]);

  // A key made with the defaults holds models only.
  await page.getByRole("button", { name: "New key" }).click();
  await page.getByLabel("Name", { exact: true }).fill("Chat only");
  await page.getByRole("button", { name: "Create key" }).click();
  await page.locator("#new-key").waitFor({ state: "visible" });
  await page.getByRole("button", { name: "I’ve saved it" }).click();
  const chatRow = page.locator("#grants-table tbody tr", { hasText: "Chat only" });
  await chatRow.locator(".scope-list li").first().waitFor();
  assert.deepEqual(await chatRow.locator(".scope-list li").allInnerTexts(), [WORDS.inference]);
  await screenshot(page, "dash-03-grants-in-words");
  await assertClean(page, problems, "grants in words");
  await context.close();
});

test("the stored key's status: verified, not yet verified, refused by OpenAI (with a banner to replace it)", async () => {
  const { context, page, problems } = await signedIn("Vera Status");
  // The guide's link opens OpenAI's key page in a new tab, without a referrer.
  const link = page.getByRole("link", { name: "platform.openai.com → API keys" });
  assert.equal(await link.getAttribute("href"), "https://platform.openai.com/api-keys");
  assert.equal(await link.getAttribute("target"), "_blank");
  assert.deepEqual((await link.getAttribute("rel")).split(/\s+/).sort(), ["noopener", "noreferrer"]);
  // Nothing claims a check before there is a key.
  assert.doesNotMatch(await page.locator("#openai-key-hint").innerText(), /checks the key with OpenAI before/);

  // The mock upstream accepts the key: keygate checked it, and says so.
  const openaiKey = "sk-proj-status-test-0000000000000000000000000000Stat";
  await storeKey(page, openaiKey);
  const real = await pageFetch(page, "GET", "/api/key");
  assert.equal(real.body.status, "verified");
  await page.locator("#key-check", { hasText: "Verified: OpenAI accepted it" }).waitFor();
  assert.equal(await page.locator("#banners .alert").count(), 0);

  // "Not yet verified" and "no status" are shown as keygate would report them (GET /api/key,
  // the rest of the answer real): the mock upstream can't be made unreachable for one call.
  let patch = null;
  await page.route("**/api/key", async (route) => {
    if (route.request().method() !== "GET" || !patch) return route.continue();
    const res = await route.fetch();
    await route.fulfill({ response: res, json: { ...(await res.json()), ...patch } });
  });

  // Not reachable at storing time: stored, not yet verified — never "checked".
  patch = { status: "unverified", last_validated_at: null };
  await page.reload();
  await waitForDashboard(page);
  const check = page.locator("#key-check");
  assert.match(await check.innerText(), /^Stored, not yet verified/);
  assert.doesNotMatch(await check.innerText(), /accepted|Verified:/);
  assert.equal(await page.locator("#banners .alert").count(), 0);
  await screenshot(page, "dash-04-key-unverified");

  // A keygate that doesn't report a status: the page claims nothing either way.
  patch = { status: undefined };
  await page.reload();
  await waitForDashboard(page);
  assert.ok(await check.isHidden());
  patch = null;
  await page.unroute("**/api/key");

  // OpenAI revokes the key after it was stored; an app's request through keygate meets the
  // refusal (424 owner_key_rejected), and keygate marks the key as refused.
  const grant = await pageFetch(page, "POST", "/api/grants", { name: "Status app" });
  assert.equal(grant.status, 201);
  const refused = await fetch(`${MOCK_URL}/__mock/reject-key`, { method: "POST", body: openaiKey });
  assert.equal(refused.status, 200);
  const chat = await fetch(`${BASE_URL}/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${grant.body.api_key}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] }),
  });
  assert.equal(chat.status, 424);
  assert.equal((await chat.json()).error.code, "owner_key_rejected");

  // The dashboard says what happens and what to do.
  await page.reload();
  await waitForDashboard(page);
  const banner = page.locator("#key-rejected-banner");
  await banner.waitFor();
  assert.match(await banner.innerText(), /OpenAI refused your stored key/);
  assert.match(await banner.innerText(), /apps using keygate get an error until you replace it/);
  assert.match(await check.innerText(), /OpenAI refused this key/);
  await screenshot(page, "dash-05-key-rejected-banner");
  await assertClean(page, problems, "key refused banner");

  // "Replace key" opens the key form with the cursor in it; a new key clears the refusal.
  await banner.getByRole("button", { name: "Replace key" }).click();
  await page.getByRole("heading", { name: "Replace your OpenAI key" }).waitFor();
  assert.equal(await page.evaluate(() => document.activeElement?.id), "openai-key");
  assert.equal(await banner.getByRole("button").count(), 0, "the form's button is the one 'Replace key' now");
  await page.getByLabel("OpenAI API key").fill("sk-proj-status-test-1111111111111111111111111111New1");
  await page.getByRole("button", { name: "Replace key" }).click();
  await page.locator("#key-last4", { hasText: "••••New1" }).waitFor();
  await page.locator("#key-rejected-banner").waitFor({ state: "detached" });
  await page.locator("#key-check", { hasText: "Verified: OpenAI accepted it" }).waitFor();
  assert.equal((await pageFetch(page, "GET", "/api/key")).body.status, "verified");
  await assertClean(page, problems, "key replaced");
  await context.close();
});

test("storing the first key, creating a key and adding a passkey go through the passkey step-up", async (t) => {
  const { context, page, cdp, problems, authenticatorId } = await signedIn("Stella Stepup");
  const reauth = recordReauth(page);

  // Storing the first key, once the sign-up's passkey check is older than keygate's fresh window.
  await outlastFreshWindow(t);
  let first = nextAnswer(page, "PUT", "/api/key");
  await page.getByLabel("OpenAI API key").fill("sk-proj-stepup-test-0000000000000000000000000000Step");
  await page.getByRole("button", { name: "Store key" }).click();
  assert.deepEqual(await first, FRESH_PASSKEY_REQUIRED);
  let stepUp = page.getByRole("dialog", { name: "Confirm it’s you" });
  await stepUp.waitFor();
  assert.match(await stepUp.innerText(), /Storing your OpenAI key/);
  await screenshot(page, "dash-06a-step-up-store-key", { fullPage: false });
  let retry = nextAnswer(page, "PUT", "/api/key");
  await stepUp.getByRole("button", { name: "Use passkey" }).click();
  assert.equal((await retry).status, 204);
  await page.locator("#key-status").waitFor({ state: "visible" });
  await stepUp.waitFor({ state: "detached" });
  assert.deepEqual(reauth.splice(0), ["/api/auth/reauth/start", "/api/auth/reauth/finish"]);
  assert.equal((await pageFetch(page, "GET", "/api/key")).body.enrolled, true);

  // Creating a key, once that check is old too: giving up at the passkey step creates nothing...
  await outlastFreshWindow(t);
  first = nextAnswer(page, "POST", "/api/grants");
  await page.getByRole("button", { name: "New key" }).click();
  await page.getByLabel("Name", { exact: true }).fill("Step-up app");
  await page.getByRole("button", { name: "Create key" }).click();
  assert.deepEqual(await first, FRESH_PASSKEY_REQUIRED);
  stepUp = page.getByRole("dialog", { name: "Confirm it’s you" });
  await stepUp.waitFor();
  assert.match(await stepUp.innerText(), /A new key lets an app spend on your OpenAI account/);
  await screenshot(page, "dash-06-step-up-new-key", { fullPage: false });
  await stepUp.getByRole("button", { name: "Cancel" }).click();
  assert.match(await liveText(page, "#grants-msg"), /didn’t confirm with your passkey/);
  assert.deepEqual(reauth, []);
  assert.deepEqual((await pageFetch(page, "GET", "/api/grants")).body, []);

  // ...going through with it creates the key (the session is still not fresh: keygate asks again).
  first = nextAnswer(page, "POST", "/api/grants");
  await page.getByRole("button", { name: "Create key" }).click();
  assert.deepEqual(await first, FRESH_PASSKEY_REQUIRED);
  retry = nextAnswer(page, "POST", "/api/grants");
  await page.getByRole("dialog", { name: "Confirm it’s you" }).getByRole("button", { name: "Use passkey" }).click();
  assert.equal((await retry).status, 201);
  await page.locator("#new-key").waitFor({ state: "visible" });
  assert.deepEqual(reauth.splice(0), ["/api/auth/reauth/start", "/api/auth/reauth/finish"]);
  await page.getByRole("button", { name: "I’ve saved it" }).click();

  // Adding a passkey: the check uses the passkey the person has; the new one is then made on
  // another authenticator (webauthn-rs excludes the passkeys already registered), swapped in while
  // the page's retry waits (the route only holds it; keygate answers every request).
  await outlastFreshWindow(t);
  let second = null;
  let starts = 0;
  await page.route("**/api/passkeys/start", async (route) => {
    if (route.request().method() === "POST" && ++starts === 2) {
      await removeAuthenticator(cdp, authenticatorId);
      second = await addAuthenticator(cdp);
    }
    return route.continue();
  });
  first = nextAnswer(page, "POST", "/api/passkeys/start");
  await page.getByLabel(/Name for a new passkey/).fill("Spare key");
  await page.getByRole("button", { name: "Add passkey" }).click();
  assert.deepEqual(await first, FRESH_PASSKEY_REQUIRED);
  stepUp = page.getByRole("dialog", { name: "Confirm it’s you" });
  await stepUp.waitFor();
  assert.match(await stepUp.innerText(), /Adding a passkey.*Then your device makes the new one/s);
  await screenshot(page, "dash-06b-step-up-add-passkey", { fullPage: false });
  await stepUp.getByRole("button", { name: "Use passkey" }).click();
  await page.locator("#passkeys-list", { hasText: "Spare key" }).waitFor();
  assert.equal(starts, 2);
  assert.equal(await page.locator("#passkeys-list li[data-passkey-id]").count(), 2);
  assert.equal(await credentialCount(cdp, second), 1);
  assert.deepEqual(reauth, ["/api/auth/reauth/start", "/api/auth/reauth/finish"]);
  await page.unroute("**/api/passkeys/start");
  await assertClean(page, problems, "step-up");
  await context.close();
});

test("signed-in devices: listed, ended one by one, and 'sign out everywhere else' offered after signing in", async (t) => {
  const wallet = new Wallet();
  // Device A registers.
  const a = await openPage(browser);
  const aAuth = await addAuthenticator(a.cdp);
  await register(a.page, "Dev Ices");
  await wallet.save(a.cdp, aAuth);
  // A freshly registered account has nothing else to sign out of: no offer.
  assert.equal(await a.page.locator("#other-sessions-banner").count(), 0);
  await a.page.locator("#sessions-list li").first().waitFor();
  assert.equal(await a.page.locator("#sessions-list li").count(), 1);
  assert.ok(await a.page.locator("#sessions-revoke-others").isHidden());

  /** Another device (own cookies) with the person's passkey, signed in from /login. */
  async function device() {
    const d = await openPage(browser);
    await wallet.attach(d.cdp);
    await d.page.goto("/login");
    await d.page.getByRole("button", { name: "Sign in with a passkey" }).click();
    await waitForDashboard(d.page);
    return d;
  }

  // Device B signs in: it is offered to sign out everywhere else.
  const b = await device();
  const offer = b.page.locator("#other-sessions-banner");
  await offer.waitFor();
  assert.match(await offer.innerText(), /You’re also signed in on another device/);
  const items = b.page.locator("#sessions-list li");
  assert.equal(await items.count(), 2);
  const mine = items.filter({ hasText: "This device" });
  assert.equal(await mine.count(), 1);
  assert.match(await mine.locator(".item-title").innerText(), /^Chrome on Linux/);
  assert.equal(await mine.getByRole("button", { name: /End session/ }).count(), 0, "this device signs out with Sign out");
  assert.equal(await items.getByRole("button", { name: /End session/ }).count(), 1);
  await screenshot(b.page, "dash-07-signed-in-elsewhere");
  await assertClean(b.page, b.problems, "sessions after sign-in");

  // The offer is made once: reloading doesn't repeat it (the devices list still has the button).
  await b.page.reload();
  await waitForDashboard(b.page);
  await b.page.locator("#sessions-list li").nth(1).waitFor();
  assert.equal(await b.page.locator("#other-sessions-banner").count(), 0);
  await b.page.getByRole("button", { name: "Sign out everywhere else" }).waitFor();

  // Device A sees both; it ends B's session from its list.
  await a.page.reload();
  await waitForDashboard(a.page);
  await a.page.locator("#sessions-list li").nth(1).waitFor();
  assert.equal(await a.page.locator("#other-sessions-banner").count(), 0, "A did not just sign in");
  // Ending another device's session is a step-up; A signed up moments ago, so its session is
  // fresh and no passkey prompt appears.
  const aReauth = recordReauth(a.page);
  await a.page.locator("#sessions-list").getByRole("button", { name: /End session/ }).click();
  await a.page.locator("#sessions-list li").nth(1).waitFor({ state: "detached" });
  assert.deepEqual(aReauth, [], "a fresh session ends another one without a prompt");
  assert.equal((await pageFetch(b.page, "GET", "/api/me")).status, 401, "B is signed out");
  assert.equal((await pageFetch(a.page, "GET", "/api/me")).status, 200, "A is not");

  // Device C signs in and signs out everywhere else from the offer: A is signed out.
  // ("Sign out everywhere else" is a step-up too; right after signing in the session is fresh,
  // so the offer works without a second prompt.)
  const c = await device();
  const cReauth = recordReauth(c.page);
  await c.page.locator("#other-sessions-banner").waitFor();
  await c.page.locator("#other-sessions-banner").getByRole("button", { name: "Sign out everywhere else" }).click();
  await c.page.locator("#other-sessions-banner").waitFor({ state: "detached" });
  await c.page.locator("#sessions-list li").nth(1).waitFor({ state: "detached" });
  assert.equal(await c.page.locator("#sessions-list li").count(), 1);
  assert.ok(await c.page.locator("#sessions-revoke-others").isHidden());
  assert.equal((await pageFetch(a.page, "GET", "/api/me")).status, 401, "A is signed out");
  assert.equal((await pageFetch(c.page, "GET", "/api/me")).status, 200, "C is not");
  assert.deepEqual(cReauth, [], "no passkey prompt right after signing in");
  await screenshot(c.page, "dash-08-signed-out-elsewhere");
  await assertClean(c.page, c.problems, "signed out everywhere else");

  // Later (keygate's clock moved past the fresh window: it answers fresh_passkey_required),
  // the devices list's "Sign out everywhere else" asks for the passkey first, then
  // signs the other devices out. Device D signs in (its passkey copy is the newest) and keeps
  // the offer aside, then uses the list's button.
  const d = await device();
  await d.page.locator("#other-sessions-banner").getByRole("button", { name: "Keep them" }).click();
  const dReauth = recordReauth(d.page);
  await outlastFreshWindow(t);
  const refused = nextAnswer(d.page, "POST", "/api/sessions/revoke-others");
  await d.page.locator("#sessions-revoke-others").click();
  assert.deepEqual(await refused, FRESH_PASSKEY_REQUIRED);
  const stepUp = d.page.getByRole("dialog", { name: "Confirm it’s you" });
  await stepUp.waitFor();
  assert.match(await stepUp.innerText(), /Signing out your other devices/);
  await stepUp.getByRole("button", { name: "Use passkey" }).click();
  await d.page.locator("#sessions-list li").nth(1).waitFor({ state: "detached" });
  assert.deepEqual(dReauth, ["/api/auth/reauth/start", "/api/auth/reauth/finish"]);
  assert.equal((await pageFetch(c.page, "GET", "/api/me")).status, 401, "C is signed out");
  assert.equal((await pageFetch(d.page, "GET", "/api/me")).status, 200, "D is not");
  await assertClean(d.page, d.problems, "sign out everywhere else after a step-up");

  // A's open dashboard notices at its next action and asks to sign in again.
  await a.page.getByRole("button", { name: "New key" }).click();
  await a.page.getByLabel("Name", { exact: true }).fill("Too late");
  await a.page.getByRole("button", { name: "Create key" }).click();
  await a.page.waitForURL(/\/login\?reason=expired$/);
  for (const x of [a, b, c, d]) await x.context.close();
});
