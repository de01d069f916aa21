// Step-up: keygate asks for a fresh passkey check before sensitive changes (storing, replacing
// or deleting the OpenAI key, creating an app key, adding or removing a passkey, deleting the
// account) once the sign-in is more than a few minutes old. api.js calls this on
// `fresh_passkey_required`, then retries the request once.
//
// The check runs from a click in the dialog (ui.js's confirmDialog), so the browser's passkey
// prompt always follows a user gesture.

import { ApiError } from "./errors.js";
import { reauthenticate } from "./passkey.js";
import { confirmDialog } from "./ui.js";

const DEFAULT_MESSAGE =
  "This is a sensitive change, so keygate asks for your passkey once more. It only takes a moment.";

let pending = null;

/**
 * Resolves once the person has confirmed with a passkey; rejects if they give up.
 * `message` says what they are doing and why keygate asks (defaults to a general sentence).
 */
export function confirmWithPasskey(message = null) {
  if (!pending) {
    pending = ask(message || DEFAULT_MESSAGE).finally(() => {
      pending = null;
    });
  }
  return pending;
}

async function ask(message) {
  const confirmed = await confirmDialog({
    id: "stepup-dialog",
    title: "Confirm it’s you",
    message,
    confirmLabel: "Use passkey",
    confirmIcon: "passkey",
    iconName: "shield",
    focus: "confirm",
    action: () => reauthenticate(),
  });
  if (!confirmed) {
    throw new ApiError("You didn’t confirm with your passkey, so nothing was changed.", {
      code: "step_up_cancelled",
    });
  }
}
