// "Sign in with OpenAI" across two origins, in a real browser: the demo app (its own origin)
// opens keygate's connect popup from a click; a new person registers with a virtual passkey,
// stores their OpenAI key and approves; the demo streams a chat through keygate's proxy with
// the official `openai` package. Then: a second connect reuses the sign-in and offers the
// existing connection; a revoked key asks to reconnect; deny and a closed popup reach the demo
// as UserDeniedError and PopupClosedError; a page on a third origin never receives the key and
// its requests with the key are refused. An app asking for more than models (SDK `scopes`)
// gets it listed in plain words; a scope keygate doesn't know stops the connection.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import OpenAI from "openai";

import { SCOPES } from "../../web/js/scopes.js";
import { advanceClock, assertClean, launch, resetClock, screenshot } from "./lib.mjs";
import {
  BASE_URL,
  DEMO_ORIGIN,
  PUBLIC_URL,
  TEST_KEY,
  Wallet,
  approveInPopup,
  demoNotice,
  html,
  openDemo,
  openPopup,
  rawChat,
  recordKeys,
  startServer,
  vaultFetch,
  waitForClose,
  waitForConsent,
  watch,
} from "./connect/helpers.mjs";

let browser;
let thirdOrigin;
before(async () => {
  browser = await launch();
  // A page on a third origin that records every message it receives.
  thirdOrigin = await startServer((req, res, url) => {
    if (url.pathname === "/listener") {
      return html(res, 200, `<h1>Somebody else's site</h1><script src="/listener.js"></script>`);
    }
    if (url.pathname === "/listener.js") {
      res.writeHead(200, { "content-type": "text/javascript" });
      return res.end(
        "window.received = [];" +
          "addEventListener('message', (e) => window.received.push({origin: e.origin, data: e.data}));",
      );
    }
    res.writeHead(404).end();
  });
});
after(async () => {
  await browser?.close();
  await thirdOrigin?.close();
});

test("Sign in with OpenAI from the demo app, end to end", async (t) => {
  const wallet = new Wallet();
  const { context, page, problems } = await openDemo(browser);
  const keys = recordKeys(page);
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

  await step("the demo app shows its Sign in with OpenAI button", async () => {
    await page.getByRole("heading", { name: /Chat with GPT/ }).waitFor();
    await page.getByRole("button", { name: "Sign in with OpenAI" }).waitFor();
    assert.equal(await page.getByRole("button", { name: "Sign in with OpenAI" }).isEnabled(), true);
    await screenshot(page, "connect-01-demo-welcome");
    await assertClean(page, problems, "demo welcome");
  });

  let grantId;
  await step("a click opens the popup; a new person registers, stores a key and approves", async () => {
    const { popup, cdp, authenticatorId, problems: popupProblems } = await openPopup(
      page,
      page.getByRole("button", { name: "Sign in with OpenAI" }),
      wallet,
    );
    assert.match(popup.url(), new RegExp(`^${PUBLIC_URL}/connect\\?mode=popup&nonce=[0-9a-f]{32}$`));

    // Sign-in screen, with the app's origin as the browser reported it.
    await popup.getByRole("heading", { name: "Sign in to keygate" }).waitFor();
    assert.equal((await popup.locator("#banner-origin").innerText()).trim(), DEMO_ORIGIN);
    assert.equal((await popup.locator("#banner-name").innerText()).trim(), "Pocket Chat");
    await screenshot(popup, "connect-02-popup-signin");
    await assertClean(popup, popupProblems, "popup sign-in");

    // Register in the popup.
    await popup.getByLabel("Your name").fill("Grace Demo");
    await popup.getByRole("button", { name: "Create account with a passkey" }).click();
    await popup.getByRole("heading", { name: "Add your OpenAI key" }).waitFor();
    assert.equal(await wallet.save(cdp, authenticatorId), 1, "the passkey was made in the popup");
    await screenshot(popup, "connect-03-popup-key");
    // Where to get a key is a real link: a new tab, no referrer.
    const link = popup.getByRole("link", { name: "platform.openai.com → API keys" });
    assert.equal(await link.getAttribute("href"), "https://platform.openai.com/api-keys");
    assert.equal(await link.getAttribute("target"), "_blank");
    assert.deepEqual((await link.getAttribute("rel")).split(/\s+/).sort(), ["noopener", "noreferrer"]);

    // Store the OpenAI key.
    await popup.getByLabel("OpenAI API key").fill("not-a-key");
    await popup.getByRole("button", { name: "Seal key and continue" }).click();
    await popup.locator("#key-notice .alert-error").waitFor();
    await popup.getByLabel("OpenAI API key").fill(TEST_KEY);
    await popup.getByRole("button", { name: "Seal key and continue" }).click();

    // Consent: the verified origin, the app's self-declared name, the models it asked for.
    await waitForConsent(popup);
    assert.equal((await popup.locator("#consent-origin").innerText()).trim(), DEMO_ORIGIN);
    assert.equal((await popup.locator("#origin-label").innerText()).trim().toLowerCase(), "verified website");
    assert.equal((await popup.locator("#consent-app").innerText()).trim(), "Pocket Chat");
    assert.ok(await popup.locator("#existing-group").isHidden(), "nothing to reuse yet");
    // The app asked for no scopes: it may use models, and the page says so in words.
    assert.deepEqual(await popup.locator("#scopes-list li").allInnerTexts(), [
      SCOPES.find((s) => s.id === "inference").words,
    ]);
    const models = popup.locator("#models-body input[name=model]");
    assert.deepEqual(await models.evaluateAll((els) => els.map((e) => [e.value, e.checked])), [
      ["gpt-4o-mini", true],
      ["gpt-4o", true],
      ["gpt-4.1-mini", true],
    ]);
    assert.match(await popup.locator("#me-name").innerText(), /Grace Demo/);
    // The person may only narrow what the app asked for.
    await popup.getByLabel("gpt-4.1-mini").uncheck();
    await screenshot(popup, "connect-04-popup-consent");
    await assertClean(popup, popupProblems, "popup consent");

    await approveInPopup(popup);
    assert.deepEqual(popupProblems, [], "popup problems");

    // The demo is connected.
    const notice = await demoNotice(page, "success");
    assert.match(notice.text, /Connected/);
    await page.locator("#chat").waitFor({ state: "visible" });

    // keygate made one grant bound to the demo's origin, named after the app.
    const grants = await vaultFetch(context, "GET", `${PUBLIC_URL}/api/grants`);
    assert.equal(grants.status, 200);
    assert.equal(grants.body.length, 1);
    const [grant] = grants.body;
    assert.equal(grant.origin, DEMO_ORIGIN);
    assert.equal(grant.name, "Pocket Chat");
    assert.deepEqual(grant.models, ["gpt-4o-mini", "gpt-4o"]);
    grantId = grant.id;
  });

  await step("the demo streams a chat through keygate with the official openai SDK", async () => {
    // Slow the mock down so every token arrives on its own (the proxy forwards the header).
    await page.route(`${BASE_URL}/chat/completions`, (route) =>
      route.continue({ headers: { ...route.request().headers(), "x-mock-delay-ms": "300" } }),
    );
    // Record what the assistant's bubble shows over time.
    await page.evaluate(() => {
      window.__seen = [];
      const list = document.querySelector("#messages");
      new MutationObserver(() => {
        const last = list.querySelector(".message-assistant:last-child .message-body");
        const text = last?.textContent ?? "";
        if (text && window.__seen.at(-1)?.text !== text) window.__seen.push({ text, at: performance.now() });
      }).observe(list, { subtree: true, childList: true, characterData: true });
    });
    const responseSeen = page.waitForResponse((r) => r.url() === `${BASE_URL}/chat/completions` && r.request().method() === "POST");
    await page.getByLabel("Message").fill("Say hello");
    await page.getByLabel("Message").press("Enter");
    await page.locator(".message-user", { hasText: "Say hello" }).waitFor();
    const response = await responseSeen;
    assert.equal(response.status(), 200);
    assert.equal(response.headers()["access-control-allow-origin"], DEMO_ORIGIN);
    assert.match(response.headers()["content-type"], /text\/event-stream/);

    const answer = page.locator(".message-assistant").last();
    await answer.locator(".message-body", { hasText: "Hello from the mock!" }).waitFor();
    await page.locator(".message-assistant.is-streaming").waitFor({ state: "detached" });
    const seen = await page.evaluate(() => window.__seen);
    const texts = seen.map((s) => s.text);
    assert.equal(texts.at(-1), "Hello from the mock!");
    assert.ok(texts.length >= 4, `tokens should appear one by one, saw ${JSON.stringify(texts)}`);
    for (let i = 1; i < texts.length; i++) assert.ok(texts[i].startsWith(texts[i - 1]), "each update extends the text");
    assert.ok(seen.at(-1).at - seen[0].at >= 600, "the answer arrived over time, not at once");
    await page.unroute(`${BASE_URL}/chat/completions`);

    assert.equal(keys.length, 1);
    assert.match(keys[0], /^kg_/);
    await page.locator("#prompt").blur();
    await screenshot(page, "connect-05-demo-chat");
    await assertClean(page, problems, "demo chat");
  });

  await step("a model the person unticked is refused kindly", async () => {
    await page.getByLabel("Model").selectOption("gpt-4.1-mini");
    await page.getByLabel("Message").fill("Use the other model");
    await page.getByRole("button", { name: "Send" }).click();
    const notice = await demoNotice(page, "error");
    assert.match(notice.text, /didn't allow gpt-4\.1-mini/);
    assert.equal(notice.error, "APIError 403:model_not_allowed");
    await page.getByLabel("Model").selectOption("gpt-4o-mini");
  });

  await step("a second connect reuses the sign-in and offers the existing connection", async () => {
    const oldKey = keys[0];
    await page.getByRole("button", { name: "Disconnect" }).click();
    await page.getByRole("button", { name: "Sign in with OpenAI" }).waitFor();
    const { popup, problems: popupProblems } = await openPopup(
      page,
      page.getByRole("button", { name: "Sign in with OpenAI" }),
      wallet,
    );
    await waitForConsent(popup);
    assert.ok(await popup.locator("#step-signin").isHidden(), "no sign-in or registration the second time");
    await popup.locator("#existing-group").waitFor({ state: "visible" });
    const reuse = popup.getByRole("radio", { name: /Use existing connection “Pocket Chat” \(new key\)/ });
    assert.equal(await reuse.isChecked(), true);
    assert.equal(await popup.getByRole("radio", { name: /Create a new connection/ }).isChecked(), false);
    assert.ok(await popup.locator("#models-group").isHidden(), "a reused connection keeps its models");
    await popup.getByRole("radio", { name: /Create a new connection/ }).check();
    await popup.locator("#models-group").waitFor({ state: "visible" });
    await popup.getByRole("radio", { name: /Use existing connection/ }).check();
    await popup.locator("#models-group").waitFor({ state: "hidden" });
    await screenshot(popup, "connect-06-popup-consent-existing");
    await assertClean(popup, popupProblems, "popup consent (existing)");

    await approveInPopup(popup);
    await page.locator("#chat").waitFor({ state: "visible" });

    // Still one grant, with a new key: the old one keeps working for the reconnect grace
    // (rotated_until), then stops; the new one works.
    const grants = await vaultFetch(context, "GET", `${PUBLIC_URL}/api/grants`);
    assert.equal(grants.body.filter((g) => g.state === "active").length, 1);
    assert.equal(grants.body[0].id, grantId);

    await page.getByLabel("Message").fill("Hello again");
    await page.getByLabel("Message").press("Enter");
    await page.locator(".message-assistant .message-body", { hasText: "Hello from the mock!" }).waitFor();
    assert.equal(keys.length, 2);
    assert.notEqual(keys[1], oldKey);
    const rotatedUntil = grants.body[0].rotated_until;
    assert.ok(rotatedUntil * 1000 > Date.now(), `the old key has a grace period (rotated_until ${rotatedUntil})`);
    assert.equal((await rawChat(oldKey)).status, 200, "the replaced key works during the grace");
    await advanceClock(rotatedUntil - Math.floor(Date.now() / 1000) + 5);
    try {
      const old = await rawChat(oldKey);
      assert.equal(old.status, 401, "the replaced key no longer works after the grace");
      assert.equal(old.body.error.code, "invalid_api_key");
    } finally {
      await resetClock();
    }

    // The pair works with plain fetch too, from the app's origin (the docs' fetch snippet).
    const plain = await page.evaluate(
      async ({ apiKey, baseURL }) => {
        const res = await fetch(`${baseURL}/chat/completions`, {
          method: "POST",
          headers: { Authorization: `Bearer ${apiKey}`, "Content-Type": "application/json" },
          body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hello" }] }),
        });
        return { status: res.status, requestId: res.headers.get("x-request-id"), body: await res.json() };
      },
      { apiKey: keys[1], baseURL: BASE_URL },
    );
    assert.equal(plain.status, 200);
    assert.ok(plain.requestId, "x-request-id is exposed to the app");
    assert.equal(plain.body.choices[0].message.content, "Hello from the mock!");
  });

  await step("a revoked connection asks the person to reconnect", async () => {
    const revoked = await vaultFetch(context, "DELETE", `${PUBLIC_URL}/api/grants/${grantId}`);
    assert.ok([200, 204].includes(revoked.status), `revoke answered ${revoked.status}`);
    await page.getByLabel("Message").fill("Are you still there?");
    await page.getByLabel("Message").press("Enter");
    const notice = await demoNotice(page, "error");
    assert.match(notice.text, /revoked or has expired/);
    assert.equal(notice.error, "APIError 401:revoked_api_key");

    // Reconnecting: the revoked connection is not offered again.
    const { popup } = await openPopup(page, page.getByRole("button", { name: "Reconnect" }), wallet);
    await waitForConsent(popup);
    assert.ok(await popup.locator("#existing-group").isHidden(), "a revoked connection is not offered");
    await approveInPopup(popup);
    await page.locator("#chat").waitFor({ state: "visible" });
    await page.getByLabel("Message").fill("Back again");
    await page.getByLabel("Message").press("Enter");
    await page.locator(".message-assistant .message-body", { hasText: "Hello from the mock!" }).waitFor();
  });

  await step("denying in the popup reaches the demo as UserDeniedError", async () => {
    await page.getByRole("button", { name: "Disconnect" }).click();
    const { popup } = await openPopup(page, page.getByRole("button", { name: "Sign in with OpenAI" }), wallet);
    await waitForConsent(popup);
    await popup.getByRole("button", { name: "Deny" }).click();
    await waitForClose(popup);
    const notice = await demoNotice(page, "info");
    assert.equal(notice.error, "UserDeniedError");
    assert.match(notice.text, /chose not to connect/);
    assert.ok(await page.locator("#chat").isHidden());
  });

  await step("closing the popup reaches the demo as PopupClosedError", async () => {
    const { popup } = await openPopup(page, page.getByRole("button", { name: "Sign in with OpenAI" }), wallet);
    await waitForConsent(popup);
    await popup.close();
    const notice = await demoNotice(page, "info");
    assert.equal(notice.error, "PopupClosedError");
    assert.match(notice.text, /closed before you finished/);
    await screenshot(page, "connect-07-demo-popup-closed");
  });

  await step("a page on a third origin never receives the key, and can't use one", async () => {
    const before = (await vaultFetch(context, "GET", `${PUBLIC_URL}/api/grants`)).body.length;
    const { popup } = await openPopup(page, page.getByRole("button", { name: "Sign in with OpenAI" }), wallet);
    await waitForConsent(popup);
    // The window that opened the popup goes to another site before the person approves.
    await page.goto(`${thirdOrigin.origin}/listener`);
    await page.waitForFunction(() => Array.isArray(window.received));
    await popup.getByRole("radio", { name: /Create a new connection/ }).check();
    await approveInPopup(popup);
    await page.waitForTimeout(1000);
    const received = await page.evaluate(() => window.received);
    assert.deepEqual(
      received.filter((m) => m.data && typeof m.data === "object" && m.data.type !== "keygate:hello"),
      [],
      "the third origin got no keygate message",
    );
    assert.ok(!JSON.stringify(received).includes("kg_"), "no key reached the third origin");
    const after = (await vaultFetch(context, "GET", `${PUBLIC_URL}/api/grants`)).body;
    assert.equal(after.length, before + 1, "the approval made a grant (bound to the demo's origin)");
    assert.ok(after.every((g) => g.origin === DEMO_ORIGIN));

    // A key bound to the demo's origin, used from the third origin: refused by keygate (403,
    // no CORS header), so the browser refuses it too.
    const key = keys.at(-1);
    const fromPage = await page.evaluate(
      async ({ url, key }) => {
        try {
          const res = await fetch(url, {
            method: "POST",
            headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
            body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }),
          });
          return { status: res.status };
        } catch (err) {
          return { error: err.name };
        }
      },
      { url: `${BASE_URL}/chat/completions`, key },
    );
    assert.deepEqual(fromPage, { error: "TypeError" }, "the browser blocks the third origin's request");
    const forged = await rawChat(key, { origin: thirdOrigin.origin });
    assert.equal(forged.status, 403);
    assert.equal(forged.body?.error?.code, "origin_not_allowed");
    assert.equal(forged.headers.get("access-control-allow-origin"), null);

    // The same key from its own origin, and from a server (no Origin), still works.
    const own = await rawChat(key, { origin: DEMO_ORIGIN });
    assert.equal(own.status, 200);
    assert.equal(own.headers.get("access-control-allow-origin"), DEMO_ORIGIN);
    const client = new OpenAI({ apiKey: key, baseURL: BASE_URL, maxRetries: 0 });
    const completion = await client.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "Say hello" }],
    });
    assert.equal(completion.choices[0].message.content, "Hello from the mock!");
  });

  await context.close();
});

test("the demo at phone width: connect and chat", async () => {
  const wallet = new Wallet();
  const { context, page, problems } = await openDemo(browser, { width: 375, height: 812 });
  const { popup, cdp, authenticatorId } = await openPopup(
    page,
    page.getByRole("button", { name: "Sign in with OpenAI" }),
    wallet,
  );
  await popup.setViewportSize({ width: 375, height: 720 });
  await popup.getByLabel("Your name").fill("Phone Person");
  await popup.getByRole("button", { name: "Create account with a passkey" }).click();
  await popup.getByLabel("OpenAI API key").fill(TEST_KEY);
  await popup.getByRole("button", { name: "Seal key and continue" }).click();
  await waitForConsent(popup);
  assert.equal(await wallet.save(cdp, authenticatorId), 1);
  await approveInPopup(popup);
  await page.locator("#chat").waitFor({ state: "visible" });
  await page.getByLabel("Message").fill("Say hello from a phone");
  await page.getByLabel("Message").press("Enter");
  await page.locator(".message-assistant .message-body", { hasText: "Hello from the mock!" }).waitFor();
  await assertClean(page, problems, "demo on a phone");
  await context.close();
});

test("an app asking for more than models through the SDK: the popup lists it in words; an unknown scope stops the connection", async () => {
  const words = Object.fromEntries(SCOPES.map((s) => [s.id, s.words]));
  const wallet = new Wallet();
  const { context, page, problems } = await openDemo(browser);

  /** Calls requestOpenAIAPI with `options` from the demo page; resolves to {popup, outcome}. */
  async function ask(options) {
    const popupSeen = page.waitForEvent("popup");
    await page.evaluate(
      async ({ vault, options }) => {
        const k = await import(`${vault}/sdk/keygate.js`);
        window.__outcome = k.requestOpenAIAPI({ vault, ...options }).then(
          (v) => ({ resolved: v }),
          (err) => ({ rejected: err.name, code: err.code, message: err.message }),
        );
      },
      { vault: PUBLIC_URL, options },
    );
    const popup = await popupSeen;
    popup.setDefaultTimeout(15_000);
    const popupProblems = watch(popup);
    const cdp = await popup.context().newCDPSession(popup);
    const authenticatorId = await wallet.attach(cdp);
    return { popup, cdp, authenticatorId, popupProblems };
  }

  // A new person asked for models and files.
  const first = await ask({ appName: "File helper", scopes: ["inference", "files"] });
  const { popup } = first;
  await popup.getByLabel("Your name").fill("Sky Scopes");
  await popup.getByRole("button", { name: "Create account with a passkey" }).click();
  await popup.getByRole("heading", { name: "Add your OpenAI key" }).waitFor();
  await wallet.save(first.cdp, first.authenticatorId);
  await popup.getByLabel("OpenAI API key").fill(TEST_KEY);
  await popup.getByRole("button", { name: "Seal key and continue" }).click();
  await waitForConsent(popup);
  await popup.getByRole("heading", { name: "It will be able to" }).waitFor();
  assert.deepEqual(await popup.locator("#scopes-list li").allInnerTexts(), [words.inference, words.files]);
  await screenshot(popup, "connect-14-popup-scopes");
  await assertClean(popup, first.popupProblems, "popup consent with scopes");
  await approveInPopup(popup);
  const outcome = await page.evaluate(() => window.__outcome);
  assert.match(outcome.resolved?.apiKey || "", /^kg_/, JSON.stringify(outcome));
  const grants = await vaultFetch(popup.context(), "GET", `${PUBLIC_URL}/api/grants`);
  const grant = grants.body.find((g) => g.name === "File helper");
  assert.deepEqual(grant.scopes, ["inference", "files"]);

  // A scope keygate doesn't know: the connect page refuses it and tells the app, which gets a
  // VaultError carrying the page's message instead of a key (the SDK then closes the popup).
  await page.evaluate(async (vault) => {
    const k = await import(`${vault}/sdk/keygate.js`);
    window.__outcome = k.requestOpenAIAPI({ vault, appName: "Org admin", scopes: ["organization"] }).then(
      (v) => ({ resolved: v }),
      (err) => ({ rejected: err.name, code: err.code, message: err.message }),
    );
  }, PUBLIC_URL);
  const refused = await page.evaluate(() => window.__outcome);
  assert.equal(refused.resolved, undefined, "no key for an unknown scope");
  assert.deepEqual([refused.rejected, refused.code], ["VaultError", "bad_request"], JSON.stringify(refused));
  assert.match(refused.message, /asked for access keygate doesn’t have \(organization\)/);
  await assertClean(page, problems, "demo after scopes");
  await context.close();
});
