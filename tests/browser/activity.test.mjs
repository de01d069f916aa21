// The dashboard's "Recent activity" (issue 11, the audit log) in a real browser: the person's
// own entries, newest first, in plain words with when and from where; it follows what they do
// on the page without a reload; a sign-in on another device shows up there; "Show more" reaches
// older entries. And the words themselves for every action, straight from the module (no
// browser needed for those).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { describeEntry } from "../../web/js/recent-activity.js";
import { Wallet } from "./connect/helpers.mjs";
import { addAuthenticator, assertClean, launch, openPage, pageFetch, register, screenshot, waitForDashboard } from "./lib.mjs";

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** The activity list's sentences, newest first. */
async function sentences(page) {
  return page.locator("#activity-list .activity-text").allInnerTexts();
}

/** Waits until the newest entry says `text`. */
async function newest(page, text) {
  await page.locator("#activity-list .activity-item").first().filter({ hasText: text }).waitFor();
}

test("recent activity: what the person did, in words, as they do it; another device's sign-in too", async () => {
  const wallet = new Wallet();
  const { context, page, problems, cdp } = await openPage(browser);
  const authenticatorId = await addAuthenticator(cdp);
  await register(page, "Ada Activity");
  await wallet.save(cdp, authenticatorId);
  await newest(page, "You created your keygate account");
  const first = page.locator("#activity-list .activity-item").first();
  assert.match(await first.locator(".item-meta").innerText(), /^Just now · from (127\.0\.0\.1|::1)$/);
  assert.ok(await page.locator("#activity-more").isHidden(), "nothing older to show");

  // Storing the key and making an app key show up without a reload.
  await page.getByLabel("OpenAI API key").fill("sk-proj-activity-test-000000000000000000000000000Actv");
  await page.getByRole("button", { name: "Store key" }).click();
  await newest(page, "You stored your OpenAI key (ending in Actv)");
  await page.getByRole("button", { name: "New key" }).click();
  await page.getByLabel("Name", { exact: true }).fill("Activity bot");
  await page.getByRole("button", { name: "Create key" }).click();
  await page.locator("#new-key").waitFor({ state: "visible" });
  await newest(page, "You created the app key “Activity bot”");
  await page.getByRole("button", { name: "I’ve saved it" }).click();

  // Changes made elsewhere (here: the API from the same page) appear on the next load.
  const grants = await pageFetch(page, "GET", "/api/grants");
  const id = grants.body[0].id;
  assert.equal((await pageFetch(page, "PATCH", `/api/grants/${id}`, { limits: { rpm: 30 } })).status, 200);
  assert.equal((await pageFetch(page, "POST", `/api/grants/${id}/disable`, {})).status, 200);

  // Another device signs in with the same passkey.
  const other = await openPage(browser);
  await wallet.attach(other.cdp);
  await other.page.goto("/login");
  await other.page.getByRole("button", { name: "Sign in with a passkey" }).click();
  await waitForDashboard(other.page);
  await newest(other.page, "You signed in with “Passkey 1”");
  await other.context.close();

  await page.reload();
  await waitForDashboard(page);
  await newest(page, "You signed in with “Passkey 1”");
  assert.deepEqual(await sentences(page), [
    "You signed in with “Passkey 1”",
    "You disabled “Activity bot”",
    "You changed “Activity bot”: limits",
    "You created the app key “Activity bot”",
    "You stored your OpenAI key (ending in Actv)",
    "You created your keygate account",
  ]);
  // Nothing secret on the page: the key's last four characters, never more.
  const section = await page.locator("#activity-section").innerText();
  assert.ok(!section.includes("sk-proj"), section);
  await page.locator("#activity-section").scrollIntoViewIfNeeded();
  await screenshot(page, "dash-09-recent-activity");
  await assertClean(page, problems, "recent activity");

  // More than a page: "Show more" reaches the older entries.
  for (const name of ["A", "B", "C", "D", "E"]) {
    assert.equal((await pageFetch(page, "PATCH", `/api/grants/${id}`, { name: `Bot ${name}` })).status, 200);
  }
  await page.reload();
  await waitForDashboard(page);
  await newest(page, "You changed “Bot E”: name");
  assert.equal(await page.locator("#activity-list .activity-item").count(), 10);
  await page.getByRole("button", { name: "Show more" }).click();
  await page.locator("#activity-list .activity-item").nth(10).waitFor();
  assert.equal(await page.locator("#activity-list .activity-item").count(), 11);
  assert.ok(await page.locator("#activity-more").isHidden(), "everything is shown");
  await assertClean(page, problems, "recent activity, all of it");
  await context.close();
});

test("recent activity: each action in plain words, by the person or an administrator", () => {
  const you = { kind: "person", id: "u" };
  const admin = { kind: "admin_key", id: "bootstrap" };
  const say = (action, detail = {}, actor = you) => describeEntry({ action, actor, detail }).text;
  const cases = [
    [say("user.signed_up"), "You created your keygate account"],
    [say("user.signed_in", { passkey_name: "Phone" }), "You signed in with “Phone”"],
    [say("user.created", {}, admin), "An administrator created your account"],
    [say("passkey.added", { name: "Phone" }), "You added the passkey “Phone”"],
    [say("passkey.removed", { name: "Phone", sessions_ended: 2 }), "You removed the passkey “Phone” and signed out 2 other devices"],
    [say("key.stored", { last4: "WXYZ" }), "You stored your OpenAI key (ending in WXYZ)"],
    [say("key.stored", { last4: "WXYZ" }, admin), "An administrator stored an OpenAI key for you (ending in WXYZ)"],
    [say("key.replaced", { last4: "ABCD" }), "You replaced your OpenAI key (now ending in ABCD)"],
    [say("key.deleted"), "You deleted your OpenAI key"],
    [say("grant.created", { name: "CLI" }), "You created the app key “CLI”"],
    [say("grant.created", { name: "Notes", origin: "https://notes.example" }), "“Notes” (https://notes.example) received its app key"],
    [say("grant.changed", { name: "CLI", fields: ["limits", "scopes", "expires_at"] }), "You changed “CLI”: limits, permissions and expiry"],
    [say("grant.rotated", { name: "CLI" }, admin), "An administrator issued a new key for “CLI”"],
    [say("grant.rotated", { name: "Notes", reconnect: true }), "“Notes” reconnected and got a new key"],
    [say("grant.disabled", { name: "CLI" }), "You disabled “CLI”"],
    [say("grant.enabled", { name: "CLI" }), "You enabled “CLI” again"],
    [say("grant.revoked", { name: "CLI" }), "You revoked “CLI”"],
    [say("grant.removed", { name: "CLI" }), "You removed the revoked key “CLI” from the list"],
    [say("connect.approved", { app_name: "Notes", origin: "https://notes.example" }), "You approved “Notes” (https://notes.example)"],
    [say("connect.denied", { app_name: "Notes", origin: "https://notes.example" }), "You turned down “Notes” (https://notes.example)"],
    [say("account.deleted"), "You deleted the account"],
    [say("something.new"), "You: something.new"],
  ];
  for (const [got, want] of cases) assert.equal(got, want);
  // A name is text, whatever it holds (the page sets it with textContent).
  assert.equal(say("grant.created", { name: "<b>x</b>" }), "You created the app key “<b>x</b>”");
});
