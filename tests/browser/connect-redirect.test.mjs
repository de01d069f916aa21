// "Sign in with OpenAI" with the redirect + PKCE flow, in a real browser: a tiny server app
// (tests/browser/connect/server-app.mjs, on its own origin) sends the person to keygate, who
// signs in with a passkey and approves; keygate redirects back with code+state; the app
// exchanges the code server-side and chats with the key. A replayed code is refused, deny
// comes back as error=access_denied, a bad request never redirects; an app asking for more
// than models gets it listed in plain words on the consent page, and revoking a connected app
// on the dashboard says to reconnect from the app; and the demo app's "Connect in this tab"
// uses the same flow from the browser (SDK completeRedirect()).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { SCOPES } from "../../web/js/scopes.js";
import {
  FRESH_PASSKEY_REQUIRED,
  addAuthenticator,
  assertClean,
  launch,
  nextAnswer,
  openPage,
  outlastFreshWindow,
  pageFetch,
  register,
  screenshot,
} from "./lib.mjs";
import {
  BASE_URL,
  DEMO_ORIGIN,
  DEMO_URL,
  PUBLIC_URL,
  TEST_KEY,
  Wallet,
  rawChat,
  vaultFetch,
  watch,
} from "./connect/helpers.mjs";
import { startServerApp } from "./connect/server-app.mjs";

let browser;
let app;
before(async () => {
  browser = await launch();
  app = await startServerApp({ vault: PUBLIC_URL });
});
after(async () => {
  await browser?.close();
  await app?.close();
});

/** A person registered on keygate's own sign-in page, with a key stored; their passkey in a wallet. */
async function person(name) {
  const { context, page, cdp } = await openPage(browser);
  const authenticatorId = await addAuthenticator(cdp);
  await register(page, name);
  const stored = await pageFetch(page, "PUT", "/api/key", { api_key: TEST_KEY });
  assert.equal(stored.status, 204);
  const wallet = new Wallet();
  await wallet.save(cdp, authenticatorId);
  await context.close();
  return wallet;
}

/** A fresh browser (no keygate session) holding the person's passkey. */
async function freshBrowser(wallet, { width = 1280, height = 860 } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const problems = watch(page);
  const cdp = await context.newCDPSession(page);
  await wallet.attach(cdp);
  return { context, page, problems };
}

test("a server app connects with redirect + PKCE", async (t) => {
  const wallet = await person("Rita Redirect");
  const { context, page, problems } = await freshBrowser(wallet);

  await t.test("the app sends the person to keygate, who signs in and approves", async () => {
    await page.goto(app.origin);
    await page.getByRole("link", { name: "Connect OpenAI" }).click();
    await page.waitForURL((url) => url.href.startsWith(`${PUBLIC_URL}/connect?response_type=code`));
    const query = new URL(page.url()).searchParams;
    assert.equal(query.get("redirect_uri"), `${app.origin}/callback`);
    assert.equal(query.get("code_challenge_method"), "S256");
    assert.match(query.get("code_challenge"), /^[A-Za-z0-9_-]{43}$/);

    await page.getByRole("heading", { name: "Sign in to keygate" }).waitFor();
    assert.equal((await page.locator("#banner-origin").innerText()).trim(), app.origin);
    await screenshot(page, "connect-08-redirect-signin");
    await page.getByRole("button", { name: "Sign in with a passkey" }).click();

    await page.locator("#step-consent").waitFor({ state: "visible" });
    assert.equal((await page.locator("#consent-origin").innerText()).trim(), app.origin);
    assert.match(await page.locator("#origin-label").innerText(), /return to/i);
    assert.equal((await page.locator("#consent-app").innerText()).trim(), "Server Notes");
    assert.equal((await page.locator("#plan-name").innerText()).trim(), "starter");
    // The plan's ceiling in words (keygate-testenv's "starter" plan), and what the grant will get:
    // the app asked for no limits of its own, so the plan's.
    assert.match(await page.locator("#plan-hint").innerText(), /up to \$5 a month, 60 requests a minute, 4 requests at a time/);
    assert.match(await page.locator("#limits-result").innerText(), /Up to \$5 a month, 60 requests a minute, 4 requests at a time/);
    // The person lowers the budget: the approve form carries it (limits, as JSON).
    await page.getByLabel("Budget", { exact: true }).fill("3");
    assert.match(await page.locator("#limits-result").innerText(), /Up to \$3 a month/);
    assert.deepEqual(
      await page.locator("#models-body input[name=model]").evaluateAll((els) => els.map((e) => [e.value, e.checked])),
      [["gpt-4o-mini", true]],
    );
    await screenshot(page, "connect-09-redirect-consent");
    await assertClean(page, problems, "redirect consent");

    await page.getByRole("button", { name: "Approve with passkey" }).click();
    await page.waitForURL((url) => url.href.startsWith(`${app.origin}/callback?`));
    const back = new URL(page.url()).searchParams;
    assert.ok(back.get("code"), "keygate sent a code");
    assert.ok(back.get("state"), "and the state");
    assert.equal((await page.locator("#answer").innerText()).trim(), "Hello from the mock!");
    assert.ok(!(await page.content()).includes(app.last.apiKey), "the key stays on the server");
  });

  await t.test("the grant is bound to the app's origin, with its name, models, plan and the lowered budget", async () => {
    assert.match(app.last.apiKey, /^kg_/);
    assert.equal(app.last.baseURL, BASE_URL);
    const grants = await vaultFetch(context, "GET", `${PUBLIC_URL}/api/grants`);
    const grant = grants.body.find((g) => g.id === app.last.grantId);
    assert.ok(grant, "the grant id from the token exchange is the person's grant");
    assert.equal(grant.origin, app.origin);
    assert.equal(grant.name, "Server Notes");
    assert.deepEqual(grant.models, ["gpt-4o-mini"]);
    assert.equal(grant.plan, "starter");
    assert.deepEqual(grant.limits.budget, { usd: 3, tokens: null, period: "month" });
    assert.equal(grant.limits.rpm, 60);
  });

  await t.test("a code works once", async () => {
    const replay = await fetch(`${PUBLIC_URL}/api/connect/token`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ code: app.last.code, code_verifier: app.last.verifier }),
    });
    assert.equal(replay.status, 400);
    const body = await replay.json();
    assert.equal(body.error.code, "invalid_grant");
    assert.equal(typeof body.error.message, "string");
    // The key from the first exchange still works, from the server (no Origin) and the app's origin.
    assert.equal((await rawChat(app.last.apiKey)).status, 200);
    assert.equal((await rawChat(app.last.apiKey, { origin: app.origin })).status, 200);
    const elsewhere = await rawChat(app.last.apiKey, { origin: DEMO_ORIGIN });
    assert.equal(elsewhere.status, 403);
    assert.equal(elsewhere.body.error.code, "origin_not_allowed");
  });

  await t.test("denying sends the person back with error=access_denied", async () => {
    await page.goto(`${app.origin}/connect`);
    await page.locator("#step-consent").waitFor({ state: "visible" });
    // "Use another account" signs out and asks again, without losing the request.
    await page.getByRole("button", { name: "Use another account" }).click();
    await page.getByRole("heading", { name: "Sign in to keygate" }).waitFor();
    await page.getByRole("button", { name: "Sign in with a passkey" }).click();
    await page.locator("#step-consent").waitFor({ state: "visible" });
    assert.match(await page.locator("#me-name").innerText(), /Rita Redirect/);
    await page.getByRole("button", { name: "Deny" }).click();
    await page.waitForURL((url) => url.href.startsWith(`${app.origin}/callback?`));
    const back = new URL(page.url()).searchParams;
    assert.equal(back.get("error"), "access_denied");
    assert.ok(back.get("state"));
    assert.equal(back.get("code"), null);
    await page.getByText("You chose not to connect Server Notes.").waitFor();
  });

  await t.test("a bad request gets an error page, never a redirect", async () => {
    const url = new URL(`${PUBLIC_URL}/connect`);
    url.search = new URLSearchParams({
      response_type: "code",
      redirect_uri: `${app.origin}/callback`,
      state: "s",
      code_challenge: "x".repeat(43),
      code_challenge_method: "plain",
    }).toString();
    const res = await page.goto(url.href);
    assert.equal(res.status(), 400);
    assert.equal(new URL(page.url()).origin, new URL(PUBLIC_URL).origin);
    await page.getByRole("heading", { name: /can't be completed/ }).waitFor();
  });

  await context.close();
});

test("the consent page lists what the app asks to do in plain words; revoking says to reconnect from the app", async () => {
  const words = Object.fromEntries(SCOPES.map((s) => [s.id, s.words]));
  const wallet = await person("Sam Scopes");
  const { context, page, problems } = await freshBrowser(wallet);

  // Asking for nothing in particular means models only.
  await page.goto(`${app.origin}/connect`);
  await page.getByRole("button", { name: "Sign in with a passkey" }).click();
  await page.locator("#step-consent").waitFor({ state: "visible" });
  assert.deepEqual(await page.locator("#scopes-list li").allInnerTexts(), [words.inference]);

  // An app asking for files too gets both listed, in keygate's words.
  await page.goto(`${app.origin}/connect?scopes=inference,files`);
  await page.locator("#step-consent").waitFor({ state: "visible" });
  assert.equal(new URL(page.url()).searchParams.get("scopes"), "inference,files");
  await page.getByRole("heading", { name: "It will be able to" }).waitFor();
  assert.deepEqual(await page.locator("#scopes-list li").allInnerTexts(), [words.inference, words.files]);
  await screenshot(page, "connect-12-consent-scopes");
  await assertClean(page, problems, "consent with scopes");
  await page.getByRole("button", { name: "Approve with passkey" }).click();
  await page.waitForURL((url) => url.href.startsWith(`${app.origin}/callback?`));
  await page.locator("#answer").waitFor();

  const grants = await vaultFetch(context, "GET", `${PUBLIC_URL}/api/grants`);
  const grant = grants.body.find((g) => g.id === app.last.grantId);
  assert.deepEqual(grant.scopes, ["inference", "files"]);

  // The dashboard shows the connected app's scopes in words, and revoking it says what to do next.
  await page.goto(`${PUBLIC_URL}/dashboard`);
  await page.locator("#content").waitFor({ state: "visible" });
  const row = page.locator(`#grants-table tbody tr[data-grant-id="${grant.id}"]`);
  assert.deepEqual(await row.locator(".scope-list li").allInnerTexts(), [words.inference, words.files]);
  await row.getByRole("button", { name: "Revoke Server Notes" }).click();
  const dialog = page.getByRole("dialog", { name: "Revoke “Server Notes”?" });
  await dialog.waitFor();
  const text = await dialog.innerText();
  assert.ok(text.includes(app.origin), text);
  assert.match(text, /reconnect from the app itself/);
  assert.doesNotMatch(text, /create a new key/);
  await screenshot(page, "connect-13-revoke-connected-app", { fullPage: false });
  await dialog.getByRole("button", { name: "Revoke key" }).click();
  await dialog.waitFor({ state: "detached" });
  await row.locator(".badge-revoked").waitFor();
  await context.close();
});

test("storing the first key on the connect page goes through the passkey step-up when keygate asks for it", async (t) => {
  // A person who signed up earlier but never stored a key.
  const { context: signup, page: signupPage, cdp } = await openPage(browser);
  const authenticatorId = await addAuthenticator(cdp);
  await register(signupPage, "Kay Later");
  const wallet = new Wallet();
  await wallet.save(cdp, authenticatorId);
  await signup.close();

  const { context, page, problems } = await freshBrowser(wallet);
  await page.goto(`${app.origin}/connect`);
  await page.getByRole("button", { name: "Sign in with a passkey" }).click();
  await page.getByRole("heading", { name: "Add your OpenAI key" }).waitFor();

  // The sign-in's passkey check gets older than keygate's fresh window: keygate itself answers
  // the PUT with fresh_passkey_required, and the page asks for the passkey again.
  await outlastFreshWindow(t);
  const reauth = [];
  let puts = 0;
  page.on("request", (req) => {
    if (req.url().includes("/api/auth/reauth/")) reauth.push(new URL(req.url()).pathname);
    if (req.method() === "PUT" && new URL(req.url()).pathname === "/api/key") puts += 1;
  });
  const first = nextAnswer(page, "PUT", "/api/key");
  await page.getByLabel("OpenAI API key").fill(TEST_KEY);
  await page.getByRole("button", { name: "Seal key and continue" }).click();
  assert.deepEqual(await first, FRESH_PASSKEY_REQUIRED);
  const stepUp = page.getByRole("dialog", { name: "Confirm it’s you" });
  await stepUp.waitFor();
  assert.match(await stepUp.innerText(), /Storing your OpenAI key/);
  await screenshot(page, "connect-16-key-step-up", { fullPage: false });
  const retry = nextAnswer(page, "PUT", "/api/key");
  await stepUp.getByRole("button", { name: "Use passkey" }).click();
  assert.equal((await retry).status, 204);
  await page.locator("#step-consent").waitFor({ state: "visible" });
  assert.deepEqual(reauth, ["/api/auth/reauth/start", "/api/auth/reauth/finish"]);
  assert.equal(puts, 2);
  assert.equal((await vaultFetch(context, "GET", `${PUBLIC_URL}/api/key`)).body.enrolled, true);
  await assertClean(page, problems, "connect key step-up");
  await context.close();
});

test("the demo app's 'Connect in this tab' uses the redirect flow from the browser", async () => {
  const wallet = await person("Tab Person");
  const { context, page, problems } = await freshBrowser(wallet);
  await page.goto(DEMO_URL);
  await page.locator("html[data-ready=true]").waitFor({ state: "attached" });
  await page.getByRole("link", { name: "Connect in this tab instead" }).click();
  await page.waitForURL((url) => url.href.startsWith(`${PUBLIC_URL}/connect?response_type=code`));
  await page.getByRole("button", { name: "Sign in with a passkey" }).click();
  await page.locator("#step-consent").waitFor({ state: "visible" });
  assert.equal((await page.locator("#consent-origin").innerText()).trim(), DEMO_ORIGIN);
  assert.equal((await page.locator("#consent-app").innerText()).trim(), "Pocket Chat");
  await page.getByRole("button", { name: "Approve with passkey" }).click();

  // Back on the demo: completeRedirect() checked state, exchanged the code from the page
  // (keygate's token endpoint answers CORS for exactly this origin) and cleaned the address.
  await page.locator("#chat").waitFor({ state: "visible" });
  assert.equal(new URL(page.url()).search, "");
  await page.getByLabel("Message").fill("Say hello");
  await page.getByLabel("Message").press("Enter");
  await page.locator(".message-assistant .message-body", { hasText: "Hello from the mock!" }).waitFor();
  await assertClean(page, problems, "demo after redirect");

  // Coming back with a state this tab never stored is refused.
  await page.goto(`${DEMO_URL}/?code=forged&state=unknown`);
  const notice = page.locator("#notice .notice-error");
  await notice.waitFor();
  assert.equal(await notice.getAttribute("data-error"), "VaultError");
  assert.match(await notice.innerText(), /doesn't match a connection started in this tab/);
  await context.close();
});
