// Scratch (not committed): the dashboard with faked issue-10 answers, for screenshots.
import { test } from "node:test";
import { launch, openPage, addAuthenticator, register, screenshot } from "../lib.mjs";

const now = Math.floor(Date.now() / 1000);
const iso = (s) => new Date(s * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
const grants = [
  { id: "g1", user_id: "u", name: "Chat app", origin: "https://chat.example", models: ["gpt-4o-mini"], scopes: ["inference"], state: "active", created_at: now - 86400 * 20, last_used_at: now - 300, revoked_at: null, expires_at: iso(now + 86400 * 30), plan: "starter",
    limits: { rpm: 60, tpm: null, max_concurrency: 4, budget: { usd: 5, tokens: null, period: "month" } }, rotated_until: null },
  { id: "g2", user_id: "u", name: "Notebook script", origin: null, models: [], scopes: ["inference", "files"], state: "disabled", created_at: now - 86400 * 3, last_used_at: null, revoked_at: null, expires_at: null, plan: null,
    limits: { rpm: null, tpm: null, max_concurrency: null, budget: null }, rotated_until: null },
  { id: "g3", user_id: "u", name: "Old bot", origin: "https://bot.example", models: [], scopes: ["inference"], state: "revoked", created_at: now - 86400 * 60, last_used_at: now - 86400 * 40, revoked_at: now - 86400 * 39, expires_at: null, plan: null,
    limits: { rpm: null, tpm: null, max_concurrency: null, budget: null }, rotated_until: null },
];
function usage() {
  const days = [];
  const to = new Date(); const from = new Date(Date.now() - 29 * 86400e3);
  for (let i = 0; i < 30; i++) {
    const d = new Date(from.getTime() + i * 86400e3).toISOString().slice(0, 10);
    if (i % 3 === 1) continue;
    const req = (i * 7) % 23 + 1;
    days.push({ day: d, model: "gpt-4o-mini", requests: req, errors: i % 9 === 0 ? 1 : 0, prompt_tokens: req * 120, cached_tokens: 0, completion_tokens: req * 80, usd: req * 0.00009, estimated: i === 28 ? 1 : 0 });
    if (i % 5 === 0) days.push({ day: d, model: "gpt-4o", requests: 2, errors: 0, prompt_tokens: 400, cached_tokens: 100, completion_tokens: 300, usd: 0.004, estimated: 0 });
  }
  return { grant_id: "g1", from: from.toISOString().slice(0, 10), to: to.toISOString().slice(0, 10), days,
    summary: { period: "month", period_start: "2026-11-01T00:00:00Z", resets_at: "2026-12-01T00:00:00Z", requests: 230, tokens: 46000, usd: 1.23 },
    remaining: { usd: 3.77, tokens: null } };
}

test("preview", async () => {
  const browser = await launch();
  for (const [w, hgt] of [[1280, 900], [390, 844]]) {
    const { page, cdp } = await openPage(browser, { width: w, height: hgt });
    await addAuthenticator(cdp);
    await register(page, "Ada Preview");
    await page.route("**/api/grants", (r) => r.request().method() === "GET" ? r.fulfill({ json: grants }) : r.continue());
    await page.route("**/api/key", (r) => r.fulfill({ json: { enrolled: true, last4: "Demo", created_at: now - 86400, status: "verified", last_validated_at: now } }));
    await page.route("**/api/grants/*/usage*", (r) => r.fulfill({ json: usage() }));
    await page.route("**/api/connect/plan*", (r) => r.fulfill({ json: { name: "starter", limits: { rpm: 60, tpm: null, max_concurrency: 4, budget: { usd: 5, tokens: null, period: "month" } }, default_max_tokens: null } }));
    await page.route("**/api/grants/g1", (r) => r.request().method() === "PATCH" ? r.fulfill({ status: 400, json: { error: { message: "limits.budget.usd: the plan allows at most $5", type: "invalid_request_error", code: "invalid_request", param: "limits.budget.usd" } } }) : r.continue());
    await page.reload();
    await page.locator("#content").waitFor({ state: "visible" });
    await page.screenshot({ path: `/tmp/prev-list-${w}.png`, fullPage: true });
    await page.getByRole("button", { name: "Manage Chat app" }).click();
    await page.locator("#gd-chart svg").waitFor();
    await page.locator("#grant-detail").screenshot({ path: `/tmp/prev-detail-${w}.png` });
    await page.getByRole("button", { name: "Edit limits of Chat app" }).click();
    await page.locator("#gd-budget-usd").fill("8");
    await page.getByRole("button", { name: "Save limits" }).click();
    await page.locator("#gd-budget-usd-error").waitFor({ state: "visible" });
    await page.locator("#grant-detail").screenshot({ path: `/tmp/prev-edit-${w}.png` });
    await page.context().close();
  }
  await browser.close();
});
