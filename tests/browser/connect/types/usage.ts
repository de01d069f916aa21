// How apps use keygate's SDK, type-checked against web/sdk/keygate.d.ts and the official
// `openai` package (tsc --noEmit, run by tests/browser/connect-sdk.test.mjs). The snippets in
// docs/INTEGRATING.md come from here and from the demo app.

import OpenAI from "openai";
import {
  KeygateError,
  PopupBlockedError,
  PopupClosedError,
  TimeoutError,
  UserDeniedError,
  VERSION,
  VaultError,
  buildConnectURL,
  completeRedirect,
  createPkcePair,
  exchangeCode,
  keyInfo,
  requestOpenAIAPI,
  type KeyInfo,
  type Limits,
  type OpenAIAccess,
  type TokenResult,
} from "keygate";

declare const button: HTMLButtonElement;
declare const output: HTMLElement;

// --- popup: the snippet from the issue ---------------------------------------------------
button.addEventListener("click", async () => {
  const openai = new OpenAI(await requestOpenAIAPI({ vault: "https://vault.example" }));
  const stream = await openai.chat.completions.create({
    model: "gpt-4o-mini",
    stream: true,
    messages: [{ role: "user", content: "Hello" }],
  });
  for await (const chunk of stream) output.append(chunk.choices[0]?.delta?.content ?? "");
});

// --- popup with everything, and the typed errors -------------------------------------------
async function connect(): Promise<OpenAI | null> {
  const controller = new AbortController();
  try {
    const access: OpenAIAccess = await requestOpenAIAPI({
      vault: "https://vault.example",
      appName: "My app",
      models: ["gpt-4o-mini", "gpt-4o"],
      plan: "starter",
      timeoutMs: 120_000,
      signal: controller.signal,
    });
    const yes: true = access.dangerouslyAllowBrowser;
    void yes;
    return new OpenAI(access);
  } catch (err) {
    if (err instanceof PopupBlockedError) {
      const code: "popup_blocked" = err.code;
      void code;
    } else if (err instanceof UserDeniedError) {
      const code: "access_denied" = err.code;
      void code;
    } else if (err instanceof PopupClosedError || err instanceof TimeoutError) {
      const message: string = err.message;
      void message;
    } else if (err instanceof VaultError) {
      const status: number = err.status;
      void status;
    }
    if (err instanceof KeygateError) {
      const code: string = err.code;
      void code;
    }
    return null;
  }
}
void connect;

// --- plain fetch with the pair ---------------------------------------------------------------
async function withFetch() {
  const { apiKey, baseURL } = await requestOpenAIAPI({ vault: "https://vault.example" });
  const res = await fetch(`${baseURL}/chat/completions`, {
    method: "POST",
    headers: { Authorization: `Bearer ${apiKey}`, "Content-Type": "application/json" },
    body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hello" }] }),
  });
  return res.json();
}
void withFetch;

// --- redirect mode in the browser ------------------------------------------------------------
function startRedirect(): Promise<never> {
  return requestOpenAIAPI({ mode: "redirect", vault: "https://vault.example", redirectUri: "https://app.example/callback" });
}
void startRedirect;

async function onCallbackPage() {
  const access = await completeRedirect({ vault: "https://vault.example" });
  const grantId: string = access.grantId;
  void grantId;
  return new OpenAI(access);
}
void onCallbackPage;

// --- redirect + PKCE on a server -------------------------------------------------------------
async function server() {
  const { verifier, challenge } = await createPkcePair();
  const url: string = buildConnectURL({
    vault: "https://vault.example",
    redirectUri: "https://app.example/callback",
    state: "a-random-state",
    codeChallenge: challenge,
    appName: "Server app",
    models: ["gpt-4o-mini"],
  });
  void url;
  const token: TokenResult = await exchangeCode({ vault: "https://vault.example", code: "from-the-query", codeVerifier: verifier });
  const openai = new OpenAI({ apiKey: token.apiKey, baseURL: token.baseURL });
  return openai.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hello" }] });
}
void server;

const version: string = VERSION;
void version;

// --- docs/INTEGRATING.md, verbatim ------------------------------------------------------------
declare const vault: string;
declare function offerRedirect(): void;
declare function show(message: string): void;
{
  let openai: OpenAI | undefined;
  // "Errors"
  button.addEventListener("click", async () => {
    try {
      openai = new OpenAI(await requestOpenAIAPI({ vault, appName: "My app", models: ["gpt-4o-mini"] }));
    } catch (err) {
      if (err instanceof PopupBlockedError) offerRedirect();
      else if (err instanceof UserDeniedError) show("No problem: nothing was shared.");
      else if (err instanceof PopupClosedError || err instanceof TimeoutError) show("Try again when you're ready.");
      else if (err instanceof VaultError) show(err.message);
    }
  });
  void openai;
}
async function docsRedirectFromTheBrowser() {
  // On click: stores a verifier and state in sessionStorage and navigates to keygate.
  requestOpenAIAPI({ mode: "redirect", vault, redirectUri: `${location.origin}/`, appName: "Pocket Chat" });

  // On the redirectUri page (the demo app checks for ?state with ?code or ?error on load):
  const openai = new OpenAI(await completeRedirect({ vault }));
  return openai;
}
void docsRedirectFromTheBrowser;

// --- what must not compile -------------------------------------------------------------------
// @ts-expect-error: the vault is required
void requestOpenAIAPI({});
// @ts-expect-error: redirect mode needs a redirectUri
void requestOpenAIAPI({ mode: "redirect", vault: "https://vault.example" });
// @ts-expect-error: models is a list of names
void requestOpenAIAPI({ vault: "https://vault.example", models: "gpt-4o-mini" });
// @ts-expect-error: exchangeCode needs the verifier
void exchangeCode({ vault: "https://vault.example", code: "x" });

// --- limits: ask, read what the person approved, show what is left -------------------------
async function withLimits(label: HTMLElement): Promise<OpenAI> {
  const asked: Limits = { budget: { usd: 5, period: "month" }, rpm: 60, max_concurrency: 2 };
  const access = await requestOpenAIAPI({
    vault: "https://vault.example",
    appName: "My app",
    models: ["gpt-4o-mini"],
    plan: "starter",
    limits: asked,
    expiresIn: 30 * 86400,
  });
  const budget: number | null | undefined = access.limits?.budget?.usd;
  const expires: string | null | undefined = access.expiresAt;
  void budget;
  void expires;
  const info: KeyInfo = await keyInfo(access);
  if (info.remaining.usd !== null) {
    label.textContent = `You have $${info.remaining.usd.toFixed(2)} left this ${info.usage.period}`;
  }
  const resets: string = info.usage.resets_at;
  void resets;
  return new OpenAI(access);
}
void withLimits;
