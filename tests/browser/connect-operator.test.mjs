// The operator's key through the connect page (issue 11 point 8): an app asks for a plan that
// lends the operator's OpenAI key (keygate-testenv's `lent`), so a new person who has no key
// of their own signs up and approves without being asked for one; the app's first request
// goes out with the operator's key. On any other plan the key step stays.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { addAuthenticator, assertClean, launch, openPage, pageFetch, screenshot } from "./lib.mjs";
import { MOCK_URL, PUBLIC_URL } from "./connect/helpers.mjs";
import { startServerApp } from "./connect/server-app.mjs";

const OPERATOR_KEY = process.env.KG_OPERATOR_KEY || "";

let browser;
let app;
before(async () => {
  assert.ok(OPERATOR_KEY.startsWith("sk-"), "KG_OPERATOR_KEY is set (tests/browser/run.sh)");
  browser = await launch();
  app = await startServerApp({ vault: PUBLIC_URL });
});
after(async () => {
  await browser?.close();
  await app?.close();
});

/** A fresh browser with a virtual authenticator, at the server app's connect link for `plan`. */
async function connectOn(plan) {
  const { context, page, cdp, problems } = await openPage(browser);
  await addAuthenticator(cdp);
  await page.goto(`${app.origin}/connect?plan=${plan}`);
  await page.getByRole("heading", { name: "Sign in to keygate" }).waitFor();
  return { context, page, problems };
}

test("a plan that lends the operator's key needs no key of the person's own", async () => {
  const { context, page, problems } = await connectOn("lent");
  await page.getByLabel("Your name").fill("Olive Operator");
  await page.getByRole("button", { name: "Create account with a passkey" }).click();
  // Straight to consent: no "Add your OpenAI key" step.
  await page.locator("#step-consent").waitFor({ state: "visible" });
  assert.equal(await page.getByRole("heading", { name: "Add your OpenAI key" }).isVisible(), false);
  assert.equal((await page.locator("#plan-name").innerText()).trim(), "lent");
  await screenshot(page, "connect-operator-consent");
  await assertClean(page, problems, "consent on a lending plan");

  const key = await pageFetch(page, "GET", "/api/key");
  assert.equal(key.body.enrolled, false, "the person stored no key");

  await page.getByRole("button", { name: "Approve with passkey" }).click();
  await page.waitForURL((url) => url.href.startsWith(`${app.origin}/callback?`));
  assert.equal((await page.locator("#answer").innerText()).trim(), "Hello from the mock!");
  // The app's request went out with the operator's key.
  const seen = await (await fetch(`${MOCK_URL}/__mock/requests`)).json();
  assert.equal(seen.at(-1).headers.authorization, `Bearer ${OPERATOR_KEY}`);
  await context.close();
});

test("any other plan still asks a new person for their key", async () => {
  const { context, page } = await connectOn("starter");
  await page.getByLabel("Your name").fill("Kim Keyed");
  await page.getByRole("button", { name: "Create account with a passkey" }).click();
  await page.getByRole("heading", { name: "Add your OpenAI key" }).waitFor();
  assert.equal(await page.locator("#step-consent").isVisible(), false);
  await context.close();
});
