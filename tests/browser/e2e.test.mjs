// The whole life of an account, in a real browser with a virtual passkey authenticator:
// register → store an OpenAI key → create a grant and read its copy-once key → use it with the
// official openai SDK → add a second passkey → sign out → sign in with the second passkey →
// revoke the grant (the SDK is refused) → delete the account (the session and the old passkey
// no longer work). Screenshots of every page along the way.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import OpenAI from "openai";

import {
  BASE_URL,
  PUBLIC_URL,
  addAuthenticator,
  assertClean,
  credentialCount,
  launch,
  liveText,
  openPage,
  pageFetch,
  register,
  removeAuthenticator,
  screenshot,
  waitForDashboard,
} from "./lib.mjs";

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

function sdk(apiKey) {
  return new OpenAI({ apiKey, baseURL: `${PUBLIC_URL}/v1`, maxRetries: 0, timeout: 20_000 });
}

async function ask(apiKey) {
  const completion = await sdk(apiKey).chat.completions.create({
    model: "gpt-4o-mini",
    messages: [{ role: "user", content: "Say hello" }],
  });
  return completion.choices[0].message.content;
}

test("a person registers, stores a key, uses a grant, manages passkeys and deletes the account", async (t) => {
  const { page, cdp, problems } = await openPage(browser);
  const firstAuthenticator = await addAuthenticator(cdp);
  let apiKey;
  // The steps depend on each other: once one fails, the rest are skipped.
  let failed = null;
  const step = async (name, fn) => {
    if (failed) return t.test(name, { skip: `an earlier step failed: ${failed}` }, () => {});
    return t.test(name, async (st) => {
      try {
        await fn(st);
      } catch (err) {
        failed = name;
        throw err;
      }
    });
  };

  await step("the sign-in page offers a passkey first", async () => {
    await page.goto("/login");
    await assert.doesNotReject(page.getByRole("heading", { name: "Sign in to keygate" }).waitFor());
    const buttons = await page.getByRole("button").allInnerTexts();
    assert.equal(buttons[0].trim(), "Sign in with a passkey");
    await screenshot(page, "01-login");
    await assertClean(page, problems, "login");
  });

  await step("registering with a passkey signs the person in", async () => {
    await register(page, "Ada Lovelace");
    assert.equal(await credentialCount(cdp, firstAuthenticator), 1);
    assert.equal((await page.locator("#user-name").innerText()).trim(), "Ada Lovelace");
    const me = await pageFetch(page, "GET", "/api/me");
    assert.equal(me.status, 200);
    assert.equal(me.body.name, "Ada Lovelace");
    // No key yet: the guide and the form are shown.
    await page.getByRole("heading", { name: "Store your OpenAI key" }).waitFor();
    await page.getByRole("link", { name: /platform\.openai\.com/ }).waitFor();
    await page.locator(".empty").waitFor();
    await screenshot(page, "02-dashboard-empty");
    await assertClean(page, problems, "empty dashboard");
  });

  await step("/login sends a signed-in person to the dashboard", async () => {
    await page.goto("/login");
    await waitForDashboard(page);
  });

  await step("storing an OpenAI key shows only its last 4 characters", async () => {
    const key = "sk-proj-browser-test-0000000000000000000000000000Wxyz";
    await page.getByLabel("OpenAI API key").fill(key);
    await page.getByRole("button", { name: "Store key" }).click();
    await page.locator("#key-status").waitFor({ state: "visible" });
    assert.equal((await page.locator("#key-last4").innerText()).trim(), "••••Wxyz");
    assert.ok(!(await page.content()).includes(key), "the key must not stay in the page");
    const status = await pageFetch(page, "GET", "/api/key");
    assert.deepEqual([status.body.enrolled, status.body.last4], [true, "Wxyz"]);
  });

  await step("replacing the OpenAI key", async () => {
    await page.getByRole("button", { name: "Replace" }).click();
    await page.getByRole("heading", { name: "Replace your OpenAI key" }).waitFor();
    await page.getByRole("button", { name: "Cancel" }).click();
    assert.equal((await page.locator("#key-last4").innerText()).trim(), "••••Wxyz");
    await page.getByRole("button", { name: "Replace" }).click();
    await page.getByLabel("OpenAI API key").fill("sk-proj-browser-test-1111111111111111111111111111Abcd");
    await page.getByRole("button", { name: "Replace key" }).click();
    await page.locator("#key-last4", { hasText: "••••Abcd" }).waitFor();
    assert.ok(await page.locator("#key-form").isHidden());
  });

  await step("creating a grant shows its key once, with base URL and snippet", async () => {
    // A restricted one first, so the table shows both kinds of model lists.
    await page.getByRole("button", { name: "New key" }).click();
    await page.getByLabel("Name", { exact: true }).fill("Research notebook");
    await page.getByLabel(/Models/).fill("gpt-4o-mini, gpt-4.1");
    await page.getByRole("button", { name: "Create key" }).click();
    await page.locator("#new-key").waitFor({ state: "visible" });
    await page.getByRole("button", { name: "I’ve saved it" }).click();
    await page.locator("#new-key").waitFor({ state: "hidden" });

    await page.getByRole("button", { name: "New key" }).click();
    await page.getByLabel("Name", { exact: true }).fill("Chat app");
    await page.getByRole("button", { name: "Create key" }).click();
    await page.locator("#new-key").waitFor({ state: "visible" });
    apiKey = (await page.locator("#new-key-value").innerText()).trim();
    assert.match(apiKey, /^kg_[A-Za-z0-9_-]+$/);
    assert.equal((await page.locator("#new-key-base").innerText()).trim(), BASE_URL);
    const snippet = await page.locator("#new-key-snippet").innerText();
    assert.ok(snippet.includes("new OpenAI({"), snippet);
    assert.ok(snippet.includes(`apiKey: "${apiKey}"`), "snippet carries the key");
    assert.ok(snippet.includes(`baseURL: "${BASE_URL}"`), "snippet carries the base URL");
    await page.getByText("you won’t see it again", { exact: false }).waitFor();

    await page.locator("#copy-key").click();
    await page.locator("#copy-key", { hasText: "Copied" }).waitFor();
    const clipboard = await page.evaluate(() => navigator.clipboard.readText());
    assert.equal(clipboard, apiKey);

    const rows = page.locator("#grants-table tbody tr");
    assert.equal(await rows.count(), 2);
    await screenshot(page, "03-dashboard-new-key");
    await assertClean(page, problems, "dashboard with new key");
  });

  await step("the grant works with the official openai SDK", async () => {
    assert.equal(await ask(apiKey), "Hello from the mock!");
  });

  await step("the copy-once key is gone after dismissing, and the grant shows as used", async () => {
    await page.getByRole("button", { name: "I’ve saved it" }).click();
    const row = page.locator("#grants-table tbody tr", { hasText: "Chat app" });
    // keygate may record "last used" a moment after the request (usage is batched): reload
    // until it shows.
    let lastUsed = "";
    for (let i = 0; i < 20; i++) {
      await page.reload();
      await waitForDashboard(page);
      lastUsed = await row.locator('td[data-label="Last used"]').innerText();
      if (!/never/i.test(lastUsed)) break;
      await page.waitForTimeout(250);
    }
    assert.match(lastUsed, /just now|minute|second/i);
    assert.ok(!(await page.content()).includes(apiKey), "the grant key must not come back");
    await row.locator(".badge-active").waitFor();
    assert.match(await row.locator('td[data-label="Models"]').innerText(), /All models/);
    await screenshot(page, "04-dashboard-key-and-grants");
  });

  let secondAuthenticator;
  await step("adding a second passkey", async () => {
    // webauthn-rs excludes the passkeys the person already has: make the new one on another
    // authenticator, and take the first away so the browser uses the new one from now on.
    // Chrome allows one internal authenticator at a time.
    await removeAuthenticator(cdp, firstAuthenticator);
    secondAuthenticator = await addAuthenticator(cdp);
    await page.getByLabel(/Name for a new passkey/).fill("Backup phone");
    await page.getByRole("button", { name: "Add passkey" }).click();
    const items = page.locator("#passkeys-list li[data-passkey-id]");
    await items.nth(1).waitFor();
    assert.equal(await items.count(), 2);
    assert.equal(await credentialCount(cdp, secondAuthenticator), 1);
    await page.locator("#passkeys-list", { hasText: "Backup phone" }).waitFor();

    // Rename the first one inline.
    const first = items.filter({ hasNotText: "Backup phone" });
    await first.getByRole("button", { name: /^Rename/ }).click();
    const input = page.getByLabel("New name for this passkey");
    await input.fill("Laptop");
    await page.getByRole("button", { name: "Save" }).click();
    await page.locator("#passkeys-list li", { hasText: "Laptop" }).waitFor();
    const list = await pageFetch(page, "GET", "/api/passkeys");
    assert.deepEqual(list.body.map((p) => p.name).sort(), ["Backup phone", "Laptop"]);
    await page.locator("#passkeys-section").scrollIntoViewIfNeeded();
    await screenshot(page, "05-dashboard-passkeys");
    await assertClean(page, problems, "passkeys");
  });

  await step("signing out, then in again with the second passkey", async () => {
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.waitForURL(/\/login\?reason=signed-out$/);
    assert.match(await liveText(page, "#notice"), /signed out/i);
    assert.equal((await pageFetch(page, "GET", "/api/me")).status, 401);

    await page.getByRole("button", { name: "Sign in with a passkey" }).click();
    await waitForDashboard(page);
    assert.equal((await page.locator("#user-name").innerText()).trim(), "Ada Lovelace");
    const list = await pageFetch(page, "GET", "/api/passkeys");
    const backup = list.body.find((p) => p.name === "Backup phone");
    assert.ok(backup.last_used_at, "the second passkey was used to sign in");
  });

  await step("revoking the grant refuses the SDK", async () => {
    const row = page.locator("#grants-table tbody tr", { hasText: "Chat app" });
    await row.getByRole("button", { name: "Revoke Chat app" }).click();
    const dialog = page.getByRole("dialog", { name: "Revoke “Chat app”?" });
    await dialog.waitFor();
    await screenshot(page, "06-dialog-revoke", { fullPage: false });
    await dialog.getByRole("button", { name: "Revoke key" }).click();
    await dialog.waitFor({ state: "detached" });
    await row.locator(".badge-revoked").waitFor();
    assert.equal(await row.getByRole("button", { name: /Revoke/ }).count(), 0);

    await assert.rejects(ask(apiKey), (err) => {
      assert.ok(err instanceof OpenAI.AuthenticationError, `expected AuthenticationError, got ${err}`);
      return true;
    });
  });

  await step("deleting the account", async () => {
    await page.getByRole("button", { name: "Delete account…" }).click();
    const dialog = page.getByRole("dialog", { name: "Delete your account?" });
    await dialog.waitFor();
    // The typed confirmation guards the button.
    await dialog.getByRole("button", { name: "Delete account" }).click();
    await dialog.locator(".alert-error").waitFor();
    await dialog.getByLabel(/To confirm, type/).fill("delete my account");
    await screenshot(page, "07-dialog-delete-account", { fullPage: false });
    await dialog.getByRole("button", { name: "Delete account" }).click();
    await page.waitForURL(/\/login\?reason=deleted$/);
    assert.match(await liveText(page, "#notice"), /account was deleted/i);
    assert.equal((await pageFetch(page, "GET", "/api/me")).status, 401);
  });

  await step("the deleted account's passkey no longer signs in, with a clear message", async () => {
    await page.getByRole("button", { name: "Sign in with a passkey" }).click();
    const message = await liveText(page, "#notice");
    assert.doesNotMatch(message, /deleted\b.*app keys/i, "the old note was replaced");
    assert.match(message, /passkey/i, message);
    assert.equal(page.url(), `${PUBLIC_URL}/login?reason=deleted`);
    assert.equal((await pageFetch(page, "GET", "/api/me")).status, 401);
    await screenshot(page, "08-login-unknown-passkey");
    await assertClean(page, problems, "login after deletion");
  });
});
