// One request to keygate's JSON API, without the passkey step-up (api.js adds that on top).
//
// - Same-origin requests with the session cookie; the browser adds `Origin` to writes,
//   which is what keygate's CSRF check wants.
// - Every failure is an ApiError carrying keygate's error `code` and the HTTP `status`.
// - 401 `not_signed_in`: the session is gone, so the page goes to /login with a note
//   (unless redirectOn401 is false).
//
// passkey.js uses this directly for its ceremonies, so the modules form no cycle:
// api.js → stepup.js → passkey.js → http.js → errors.js.

import { ApiError } from "./errors.js";

const FALLBACK_MESSAGES = {
  400: "keygate could not accept that request.",
  401: "You're not signed in.",
  403: "That isn't allowed.",
  404: "That no longer exists. Reload the page to see the latest.",
  409: "That conflicts with the current state. Reload the page and try again.",
  413: "That request is too large.",
  429: "Too many requests. Wait a moment and try again.",
  500: "keygate hit an unexpected error. Try again in a moment.",
  502: "keygate couldn't reach OpenAI. Try again in a moment.",
  503: "keygate is not available right now. Try again in a moment.",
  504: "keygate timed out waiting for OpenAI. Try again in a moment.",
};

/** Sends the browser to the sign-in page with a note saying why. */
export function goToLogin(reason) {
  const url = new URL("/login", window.location.origin);
  if (reason) url.searchParams.set("reason", reason);
  window.location.assign(url.href);
}

/**
 * One API call; resolves to the parsed JSON answer (null for an empty one). Options:
 * - redirectOn401 (default true): on `not_signed_in`, go to /login?reason=expired and never settle
 */
export async function call(method, path, body, options = {}) {
  const { redirectOn401 = true } = options;
  const init = {
    method,
    credentials: "same-origin",
    cache: "no-store",
    headers: { Accept: "application/json" },
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }

  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError("Can't reach keygate. Check your connection and try again.", {
      code: "network_error",
    });
  }

  if (response.ok) {
    if (response.status === 204) return null;
    const text = await response.text();
    if (!text) return null;
    try {
      return JSON.parse(text);
    } catch {
      throw new ApiError("keygate sent an answer this page could not read.", {
        status: response.status,
        code: "bad_response",
      });
    }
  }

  const error = await readError(response);
  if (error.code === "not_signed_in" || (error.status === 401 && !error.code)) {
    if (redirectOn401) {
      goToLogin("expired");
      // The page is going away: leave callers waiting instead of flashing an error.
      return new Promise(() => {});
    }
  }
  throw error;
}

async function readError(response) {
  let detail = null;
  try {
    detail = (await response.json())?.error ?? null;
  } catch {
    detail = null;
  }
  const message =
    (detail && typeof detail.message === "string" && detail.message) ||
    FALLBACK_MESSAGES[response.status] ||
    `keygate answered with an unexpected error (HTTP ${response.status}).`;
  return new ApiError(message, {
    status: response.status,
    code: detail?.code ?? null,
    type: detail?.type ?? null,
    param: detail?.param ?? null,
  });
}
