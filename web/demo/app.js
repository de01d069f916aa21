// Pocket Chat: keygate's demo app. A small chat page on its own origin that asks the
// person for OpenAI access through their keygate vault ("Sign in with OpenAI") and then
// talks to OpenAI with the official `openai` package, in the browser.
//
// What to copy:
//   1. load keygate's SDK from the vault:        import(`${vault}/sdk/keygate.js`)
//   2. in a click handler, before any await:     requestOpenAIAPI({ vault, appName, models })
//   3. hand the result to the official SDK:      new OpenAI(access)
//   4. stream:                                   openai.chat.completions.create({ stream: true, ... })
//   5. show what is left of the budget:          keyInfo(access) → remaining.usd
// The key lives in this tab's memory only (never localStorage); reloading forgets it.

import OpenAI, { APIConnectionError, APIError, APIUserAbortError } from "./vendor/openai.mjs";

const APP_NAME = "Pocket Chat";
const MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"];
// What Pocket Chat asks for: the person sees it in words at consent and may lower it.
const LIMITS = { budget: { usd: 5, period: "month" } };

const $ = (selector) => document.querySelector(selector);
const el = {
  session: $("#session"),
  budget: $("#budget"),
  disconnect: $("#disconnect"),
  notice: $("#notice"),
  welcome: $("#welcome"),
  connect: $("#connect"),
  vaultHost: $("#vault-host"),
  redirectLink: $("#redirect-link"),
  chat: $("#chat"),
  messages: $("#messages"),
  emptyChat: $("#empty-chat"),
  composer: $("#composer"),
  prompt: $("#prompt"),
  model: $("#model"),
  send: $("#send"),
  stop: $("#stop"),
};

/** keygate's SDK module, imported from the vault. */
let keygate = null;
let vault = "";
/** The official OpenAI client, configured with the keygate key; null when not connected. */
let openai = null;
/** {apiKey, baseURL, limits, …} from keygate, for keyInfo(); null when not connected. */
let access = null;
/** The conversation so far, as the Chat Completions API wants it. */
let history = [];
let streaming = null;

// ------------------------------------------------------------------------ notices

/**
 * Shows a message above the page: kind is "info", "error" or "success". `error` (an Error's
 * class name) is kept in data-error for tests; `action` adds a button.
 */
function notice(kind, text, { error = "", action = null } = {}) {
  const box = document.createElement("div");
  box.className = `notice notice-${kind}`;
  if (error) box.dataset.error = error;
  const p = document.createElement("p");
  p.textContent = text;
  box.append(p);
  if (action) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "button button-small";
    b.textContent = action.label;
    b.addEventListener("click", action.run);
    box.append(b);
  }
  const close = document.createElement("button");
  close.type = "button";
  close.className = "notice-close";
  close.setAttribute("aria-label", "Dismiss");
  close.textContent = "×";
  close.addEventListener("click", () => box.remove());
  box.append(close);
  el.notice.replaceChildren(box);
}

function clearNotice() {
  el.notice.replaceChildren();
}

// ------------------------------------------------------------------------ connecting

function connectWithPopup() {
  clearNotice();
  // requestOpenAIAPI opens the popup synchronously: it must run inside the click, first.
  keygate
    .requestOpenAIAPI({ vault, appName: APP_NAME, models: MODELS, limits: LIMITS })
    .then(connected, explainConnectError);
}

function connectInThisTab(event) {
  event?.preventDefault();
  clearNotice();
  // Redirect + PKCE: this page goes to keygate and comes back to "/" with ?code&state.
  keygate
    .requestOpenAIAPI({ mode: "redirect", vault, redirectUri: `${window.location.origin}/`, appName: APP_NAME, models: MODELS, limits: LIMITS })
    .catch(explainConnectError);
}

/** Back from keygate in redirect mode: exchange the code (completeRedirect checks state). */
async function finishRedirect() {
  try {
    connected(await keygate.completeRedirect({ vault }));
  } catch (err) {
    explainConnectError(err);
  }
}

function connected(granted) {
  // granted = {apiKey, baseURL, dangerouslyAllowBrowser: true, limits, plan, expiresAt}: the
  // first three are what the SDK takes. maxRetries 0: show errors at once instead of retrying
  // behind the person's back.
  access = granted;
  const { apiKey, baseURL, dangerouslyAllowBrowser } = granted;
  openai = new OpenAI({ apiKey, baseURL, dangerouslyAllowBrowser, maxRetries: 0 });
  showBudget();
  history = [];
  el.messages.replaceChildren();
  showChat(true);
  notice("success", "Connected. Pocket Chat can now use OpenAI through your keygate.");
  el.prompt.focus();
}

function disconnect(message) {
  streaming?.abort();
  openai = null;
  access = null;
  el.budget.hidden = true;
  history = [];
  el.messages.replaceChildren();
  showChat(false);
  if (message) notice("info", message);
  else clearNotice();
}

function showChat(on) {
  el.chat.hidden = !on;
  el.welcome.hidden = on;
  el.session.hidden = !on;
  el.emptyChat.hidden = history.length > 0;
}

function explainConnectError(err) {
  const name = err?.name || "Error";
  if (err instanceof keygate.PopupBlockedError) {
    notice("error", "Your browser blocked the keygate window. Allow popups for this site, or connect in this tab instead.", {
      error: name,
      action: { label: "Connect in this tab", run: connectInThisTab },
    });
  } else if (err instanceof keygate.UserDeniedError) {
    notice("info", "You chose not to connect Pocket Chat. Nothing was shared; connect whenever you like.", { error: name });
  } else if (err instanceof keygate.PopupClosedError) {
    notice("info", "The keygate window was closed before you finished. Try again when you're ready.", { error: name });
  } else if (err instanceof keygate.TimeoutError) {
    notice("error", "The keygate window waited too long and was closed. Try again.", { error: name });
  } else if (err instanceof keygate.VaultError) {
    notice("error", `keygate couldn't connect Pocket Chat: ${err.message}`, { error: name });
  } else {
    notice("error", `Something went wrong while connecting: ${err?.message || err}`, { error: name });
  }
}

// ------------------------------------------------------------------------ chatting

function bubble(role, text) {
  const li = document.createElement("li");
  li.className = `message message-${role}`;
  const who = document.createElement("span");
  who.className = "message-who";
  who.textContent = role === "user" ? "You" : "Assistant";
  const body = document.createElement("div");
  body.className = "message-body";
  body.textContent = text;
  li.append(who, body);
  el.messages.append(li);
  el.emptyChat.hidden = true;
  li.scrollIntoView({ block: "end" });
  return { li, body };
}

/** "$4.99 left this month" in the header, from keygate's /v1/key; hidden when there is no budget. */
async function showBudget() {
  if (!access || !keygate.keyInfo) return;
  let info;
  try {
    info = await keygate.keyInfo(access);
  } catch {
    el.budget.hidden = true; // an older keygate, or the key stopped working: the chat says why
    return;
  }
  const left = info?.remaining?.usd;
  if (typeof left !== "number") {
    el.budget.hidden = true;
    return;
  }
  const cents = Math.floor(left * 100) / 100;
  // "$4.99 left this month"; a phone shows "$4.99 left" (the rest is hidden by the CSS).
  const rest = document.createElement("span");
  rest.className = "budget-period";
  rest.textContent = ` this ${info.usage?.period || "month"}`;
  el.budget.replaceChildren(`$${cents.toFixed(2)} left`, rest);
  el.budget.title = info.usage?.resets_at ? `Resets ${new Date(info.usage.resets_at).toLocaleDateString()}` : "";
  el.budget.hidden = false;
}

async function send(text) {
  const model = el.model.value;
  history.push({ role: "user", content: text });
  bubble("user", text);
  const answer = bubble("assistant", "");
  answer.li.classList.add("is-streaming");
  answer.li.setAttribute("aria-busy", "true");
  setBusy(true);
  let reply = "";
  try {
    const stream = await openai.chat.completions.create({ model, stream: true, messages: history });
    streaming = stream.controller;
    for await (const chunk of stream) {
      const delta = chunk.choices[0]?.delta?.content;
      if (delta) {
        reply += delta;
        answer.body.textContent = reply;
        answer.li.scrollIntoView({ block: "end" });
      }
    }
    history.push({ role: "assistant", content: reply });
  } catch (err) {
    if (err instanceof APIUserAbortError) {
      if (reply) history.push({ role: "assistant", content: reply });
      else history.pop();
      answer.li.classList.add("is-stopped");
      if (!reply) answer.body.textContent = "Stopped.";
    } else {
      // The question stays on screen; it leaves the history so the next one can go.
      history.pop();
      answer.li.remove();
      explainChatError(err, model);
    }
  } finally {
    showBudget();
    streaming = null;
    answer.li.classList.remove("is-streaming");
    answer.li.removeAttribute("aria-busy");
    setBusy(false);
  }
}

function explainChatError(err, model) {
  // (The bundled SDK's class names are minified: name errors by status and code instead.)
  const name = err instanceof APIConnectionError ? "APIConnectionError" : err instanceof APIError ? `APIError ${err.status}` : "Error";
  if (err instanceof APIConnectionError) {
    notice("error", "Can't reach keygate right now. Check your connection and try again.", { error: name });
    return;
  }
  if (!(err instanceof APIError)) {
    notice("error", `Something went wrong: ${err?.message || err}`, { error: name });
    return;
  }
  const code = err.code || "";
  const reconnect = { label: "Reconnect", run: () => connectWithPopup() };
  switch (err.status) {
    case 401:
      openai = null;
      showChat(false);
      notice("error", "Pocket Chat's access was revoked or has expired. Reconnect to keep chatting.", {
        error: `${name}:${code}`,
        action: reconnect,
      });
      return;
    case 403:
      if (code === "model_not_allowed") {
        notice("error", `You didn't allow ${model} for Pocket Chat. Pick another model, or reconnect to change what it may use.`, {
          error: `${name}:${code}`,
        });
      } else if (code === "origin_not_allowed") {
        notice("error", "keygate accepts this key only from the website it was issued to.", { error: `${name}:${code}` });
      } else {
        notice("error", `keygate refused this request: ${err.message}`, { error: `${name}:${code}` });
      }
      return;
    case 409:
      notice("error", "Your keygate vault has no OpenAI key stored. Add one on your keygate dashboard, then try again.", {
        error: `${name}:${code}`,
      });
      return;
    case 413:
      notice("error", "That message is too long to send. Shorten it and try again.", { error: `${name}:${code}` });
      return;
    case 429: {
      const wait = Number(err.headers?.get?.("retry-after"));
      notice(
        "error",
        code === "insufficient_quota"
          ? "Pocket Chat has used up what it may spend for now (or the OpenAI account is out of credit)."
          : `Too many requests right now. ${wait > 0 ? `Try again in ${Math.ceil(wait)} s.` : "Wait a moment and try again."}`,
        { error: `${name}:${code}` },
      );
      return;
    }
    default:
      if (err.status >= 500) {
        notice("error", "OpenAI or keygate had a problem answering. Try again in a moment.", { error: `${name}:${code}` });
      } else {
        notice("error", `The request failed: ${err.message}`, { error: `${name}:${code}` });
      }
  }
}

function setBusy(on) {
  el.send.disabled = on;
  el.stop.hidden = !on;
  el.prompt.readOnly = on;
}

el.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = el.prompt.value.trim();
  if (!text || streaming || el.send.disabled || !openai) return;
  el.prompt.value = "";
  clearNotice();
  send(text);
});

el.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    el.composer.requestSubmit();
  }
});

el.stop.addEventListener("click", () => streaming?.abort());
el.disconnect.addEventListener("click", () => disconnect("Disconnected. To revoke Pocket Chat's key for good, use your keygate dashboard."));
el.connect.addEventListener("click", connectWithPopup);
el.redirectLink.addEventListener("click", connectInThisTab);

// ------------------------------------------------------------------------ start

async function start() {
  try {
    const config = await (await fetch("/config.json", { cache: "no-store" })).json();
    vault = String(config.vault || "").replace(/\/+$/, "");
    keygate = await import(`${vault}/sdk/keygate.js`);
  } catch {
    notice("error", "Pocket Chat can't reach its keygate server right now. Reload the page to try again.", {
      error: "ConfigError",
    });
    return;
  }
  el.vaultHost.textContent = new URL(vault).host;
  el.connect.disabled = false;
  document.documentElement.dataset.ready = "true";
  const q = new URLSearchParams(window.location.search);
  if (q.has("state") && (q.has("code") || q.has("error"))) await finishRedirect();
}

start();
