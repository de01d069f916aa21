// keygate's JSON API, as the pages use it: http.js's call, plus the passkey step-up.
//
// - 401 `not_signed_in`: the session is gone, so the page goes to /login with a note.
// - 403 `fresh_passkey_required`: a sensitive action (replacing or deleting the OpenAI key,
//   storing the first one, creating an app key, adding or removing a passkey, ending another
//   device's session or every other session, deleting the account); stepup.js asks for the passkey again, then the original request is retried once.

import { ApiError } from "./errors.js";
import { call, goToLogin } from "./http.js";
import { confirmWithPasskey } from "./stepup.js";

export { ApiError, goToLogin };

/**
 * One API call. Options:
 * - stepUp (default true): answer `fresh_passkey_required` with the passkey check and retry once
 * - stepUpMessage: the step-up dialog's text, saying what the person is doing and why keygate
 *   asks for the passkey (a general sentence when absent)
 * - redirectOn401 (default true): on `not_signed_in`, go to /login?reason=expired and never settle
 */
export async function request(method, path, body, options = {}) {
  const { stepUp = true, stepUpMessage = null } = options;
  try {
    return await call(method, path, body, options);
  } catch (error) {
    if (error instanceof ApiError && error.code === "fresh_passkey_required" && stepUp) {
      await confirmWithPasskey(stepUpMessage); // throws if the person gives up
      return call(method, path, body, options);
    }
    throw error;
  }
}

export const api = {
  get: (path, options) => request("GET", path, undefined, options),
  post: (path, body = {}, options) => request("POST", path, body, options),
  put: (path, body, options) => request("PUT", path, body, options),
  patch: (path, body, options) => request("PATCH", path, body, options),
  del: (path, options) => request("DELETE", path, undefined, options),
};
