// Passkey ceremonies against keygate's API, with the browser's own JSON helpers
// (PublicKeyCredential.parse*OptionsFromJSON and credential.toJSON()): no base64url glue.

import { ApiError, api } from "./api.js";

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

/** Turns a WebAuthn DOMException into a PasskeyError people can act on. */
function explain(err, kind) {
  if (err instanceof ApiError || err instanceof PasskeyError) return err;
  const name = err && err.name;
  switch (name) {
    case "NotAllowedError":
    case "AbortError":
      return new PasskeyError(
        "The passkey prompt was closed before it finished, so nothing changed. Try again when you’re ready.",
        "passkey_cancelled",
        err,
      );
    case "InvalidStateError":
      return new PasskeyError(
        kind === "create"
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

async function createCredential(options) {
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
    throw explain(err, "create");
  }
}

async function getCredential(options) {
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
    throw explain(err, "get");
  }
}

const NO_REDIRECT = { redirectOn401: false, stepUp: false };

/** Creates an account for `name` with a new passkey; resolves to the person. */
export async function register(name) {
  ensureSupported();
  const { ceremony, options } = await api.post("/api/auth/register/start", { name }, NO_REDIRECT);
  const credential = await createCredential(options);
  const out = await api.post("/api/auth/register/finish", { ceremony, credential }, NO_REDIRECT);
  return out?.user ?? null;
}

/** Signs in with any of the person's passkeys (usernameless); resolves to the person. */
export async function signIn() {
  ensureSupported();
  const { ceremony, options } = await api.post("/api/auth/login/start", {}, NO_REDIRECT);
  const credential = await getCredential(options);
  const out = await api.post("/api/auth/login/finish", { ceremony, credential }, NO_REDIRECT);
  return out?.user ?? null;
}

/** A fresh passkey check for the signed-in person (before a sensitive action). */
export async function reauthenticate() {
  ensureSupported();
  const { ceremony, options } = await api.post("/api/auth/reauth/start", {}, { stepUp: false });
  const credential = await getCredential(options);
  await api.post("/api/auth/reauth/finish", { ceremony, credential }, { stepUp: false });
}

/** Adds another passkey to the signed-in person's account; resolves to it. */
export async function addPasskey(name) {
  ensureSupported();
  const { ceremony, options } = await api.post("/api/passkeys/start", {}, { stepUp: false });
  const credential = await createCredential(options);
  const body = { ceremony, credential };
  if (name) body.name = name;
  return api.post("/api/passkeys/finish", body, { stepUp: false });
}
