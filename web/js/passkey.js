// Passkey ceremonies against keygate's API, with the browser's own JSON helpers
// (PublicKeyCredential.parse*OptionsFromJSON and credential.toJSON()): no base64url glue.
//
// Every failure becomes a message a person can act on: the browser's DOMExceptions and
// keygate's `ceremony_failed` answers are both put into keygate's own words here, so no raw
// WebAuthn (or webauthn-rs) text ever reaches the page.
//
// The ceremonies call keygate through http.js (no step-up). Adding a passkey is itself a
// sensitive change that may need a fresh passkey check first: the dashboard passes api.js's
// `post` (which does the step-up) to addPasskey, so this module never imports api.js and the
// modules form no cycle.

import { ApiError } from "./errors.js";
import { call } from "./http.js";

/** A passkey prompt that did not produce a credential, with a message for people. */
export class PasskeyError extends Error {
  constructor(message, code, cause) {
    super(message);
    this.name = "PasskeyError";
    this.code = code;
    this.cause = cause;
  }
}

/** Why passkeys can't be used in this browser, or null when they can. */
export function passkeySupportProblem() {
  if (!window.isSecureContext) {
    return "Passkeys only work on a secure page: open keygate over HTTPS or at http://localhost.";
  }
  const PKC = window.PublicKeyCredential;
  if (!PKC || !navigator.credentials) {
    return "This browser doesn’t support passkeys. Try a current version of Chrome, Edge, Safari or Firefox.";
  }
  if (
    typeof PKC.parseCreationOptionsFromJSON !== "function" ||
    typeof PKC.parseRequestOptionsFromJSON !== "function"
  ) {
    return "This browser is too old for keygate's passkey sign-in. Update it and try again.";
  }
  return null;
}

function ensureSupported() {
  const problem = passkeySupportProblem();
  if (problem) throw new PasskeyError(problem, "unsupported");
}

/**
 * Turns a WebAuthn DOMException into a PasskeyError people can act on. `kind` is what the
 * prompt was for: "register" (a new account), "add" (another passkey), "signin" or "check"
 * (a passkey check while signed in).
 */
function explain(err, kind) {
  if (err instanceof ApiError || err instanceof PasskeyError) return err;
  const name = err && err.name;
  const creating = kind === "register" || kind === "add";
  switch (name) {
    case "NotAllowedError":
    case "AbortError":
      if (kind === "signin") {
        // Browsers answer the same when the person closed the prompt and when this device has
        // no passkey for keygate (they never tell a page which passkeys exist), so say both.
        return new PasskeyError(
          "No passkey was used, so you’re not signed in. If this device has no keygate passkey yet, create an account instead — or use the phone, security key or password manager that holds your passkey.",
          "passkey_not_used",
          err,
        );
      }
      return new PasskeyError(
        "The passkey prompt was closed before it finished, so nothing changed. Try again when you’re ready.",
        "passkey_cancelled",
        err,
      );
    case "InvalidStateError":
      return new PasskeyError(
        creating
          ? "This device or password manager already holds a passkey for this account. Use another one, or sign in with it instead."
          : "Your passkey couldn’t be used. Try again.",
        "passkey_exists",
        err,
      );
    case "SecurityError":
      return new PasskeyError(
        "The browser refused to use passkeys on this address. keygate must be opened at its own domain (or localhost), not an IP address.",
        "passkey_security",
        err,
      );
    case "NotSupportedError":
      return new PasskeyError(
        "This device can’t make the kind of passkey keygate needs (one that checks it’s you with a fingerprint, face or PIN).",
        "passkey_unsupported",
        err,
      );
    default:
      return new PasskeyError(
        "Something went wrong with the passkey prompt. Try again.",
        "passkey_failed",
        err,
      );
  }
}

/**
 * keygate refused a passkey it was shown (`ceremony_failed`, `credential_already_registered`):
 * the same failure in keygate's own words, so the raw reason (which may be webauthn-rs's text)
 * stays in the server log. Other errors pass through unchanged. `kind` as for explain(), or
 * "approve" (the connect page's approval).
 */
export function explainRefusal(err, kind) {
  if (!(err instanceof ApiError)) return err;
  const make = (message) => new ApiError(message, { status: err.status, code: err.code, type: err.type, param: err.param });
  if (err.code === "credential_already_registered") {
    return make(
      kind === "register"
        ? "This passkey is already registered with keygate. Sign in with it instead, or create the account with another device or password manager."
        : "This passkey is already registered with keygate. Add one from another device or password manager.",
    );
  }
  if (err.code !== "ceremony_failed") return err;
  if (/expired|already used/i.test(err.message)) {
    return make("The passkey request timed out before it finished. Try again.");
  }
  switch (kind) {
    case "signin":
      return make(
        "keygate doesn’t recognise this passkey: its account may have been deleted, or the passkey was copied from somewhere else. Sign in with another passkey, or create an account.",
      );
    case "register":
      return make("keygate couldn’t accept the new passkey, so no account was made. Try again, or use another device or password manager.");
    case "add":
      return make("keygate couldn’t accept the new passkey, so it wasn’t added. Try again, or use another device or password manager.");
    case "approve":
      return make("keygate couldn’t accept that passkey, so nothing was shared. Use one of the passkeys on your account and approve again.");
    default:
      return make("keygate couldn’t accept that passkey. Use one of the passkeys on your account and try again.");
  }
}

async function createCredential(options, kind) {
  ensureSupported();
  let publicKey;
  try {
    publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(options.publicKey);
  } catch (err) {
    throw new PasskeyError("keygate sent passkey options this browser could not read.", "bad_options", err);
  }
  try {
    const credential = await navigator.credentials.create({ publicKey });
    if (!credential) throw new DOMException("No credential", "NotAllowedError");
    return credential.toJSON();
  } catch (err) {
    throw explain(err, kind);
  }
}

async function getCredential(options, kind) {
  ensureSupported();
  let publicKey;
  try {
    publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options.publicKey);
  } catch (err) {
    throw new PasskeyError("keygate sent passkey options this browser could not read.", "bad_options", err);
  }
  try {
    const credential = await navigator.credentials.get({ publicKey });
    if (!credential) throw new DOMException("No credential", "NotAllowedError");
    return credential.toJSON();
  } catch (err) {
    throw explain(err, kind);
  }
}

const NO_REDIRECT = { redirectOn401: false };

/** `post(path, body)` through http.js: no step-up. */
const plainPost = (path, body, options) => call("POST", path, body, options);

/** Runs a ceremony's finish call, putting a refusal into keygate's own words. */
async function finish(kind, work) {
  try {
    return await work();
  } catch (err) {
    throw explainRefusal(err, kind);
  }
}

/** Creates an account for `name` with a new passkey; resolves to the person. */
export async function register(name) {
  ensureSupported();
  const { ceremony, options } = await plainPost("/api/auth/register/start", { name }, NO_REDIRECT);
  const credential = await createCredential(options, "register");
  const out = await finish("register", () =>
    plainPost("/api/auth/register/finish", { ceremony, credential }, NO_REDIRECT),
  );
  return out?.user ?? null;
}

/** Signs in with any of the person's passkeys (usernameless); resolves to the person. */
export async function signIn() {
  ensureSupported();
  const { ceremony, options } = await plainPost("/api/auth/login/start", {}, NO_REDIRECT);
  const credential = await getCredential(options, "signin");
  const out = await finish("signin", () =>
    plainPost("/api/auth/login/finish", { ceremony, credential }, NO_REDIRECT),
  );
  return out?.user ?? null;
}

/** A fresh passkey check for the signed-in person (before a sensitive action). */
export async function reauthenticate() {
  ensureSupported();
  const { ceremony, options } = await plainPost("/api/auth/reauth/start", {});
  const credential = await getCredential(options, "check");
  await finish("check", () => plainPost("/api/auth/reauth/finish", { ceremony, credential }));
}

/**
 * Adds another passkey to the signed-in person's account; resolves to it. keygate may first
 * want a fresh passkey check (`fresh_passkey_required`): pass api.js's `post` as `post` so
 * that check happens, then the new passkey is made.
 */
export async function addPasskey(name, { post = plainPost } = {}) {
  ensureSupported();
  const { ceremony, options } = await post("/api/passkeys/start", {});
  const credential = await createCredential(options, "add");
  const body = { ceremony, credential };
  if (name) body.name = name;
  return finish("add", () => post("/api/passkeys/finish", body));
}
