// The sign-in page: passkey first, with account creation below it. After signing in, the
// dashboard offers to sign out every other device when there are any (see docs/DECISIONS.md).

import { api } from "./api.js";
import { $, busy, showMessage } from "./dom.js";
import { passkeySupportProblem, register, signIn } from "./passkey.js";

const notice = $("#notice");
const registerNotice = $("#register-notice");
const signinBtn = $("#signin");
const form = $("#register-form");
const nameInput = $("#name");
const registerBtn = $("#register");

const REASONS = {
  expired: ["info", "Your session expired. Sign in again to continue."],
  "signed-out": ["success", "You’ve signed out."],
  deleted: [
    "success",
    "Your account was deleted, with your stored OpenAI key, app keys and passkeys. You can remove the passkey from your device too.",
  ],
};

const reason = new URLSearchParams(window.location.search).get("reason");
if (reason && REASONS[reason]) {
  const [kind, text] = REASONS[reason];
  showMessage(notice, kind, text);
}

const unsupported = passkeySupportProblem();
if (unsupported) {
  showMessage(notice, "error", unsupported);
  signinBtn.disabled = true;
  registerBtn.disabled = true;
}

// Already signed in? Go straight to the dashboard.
api
  .get("/api/me", { redirectOn401: false, stepUp: false })
  .then((me) => {
    if (me) window.location.replace("/dashboard");
  })
  .catch(() => {});

let working = false;

/** Tells the dashboard it was opened right after signing in (it then offers "sign out everywhere else"). */
function markSignedIn() {
  try {
    window.sessionStorage.setItem("keygate.justSignedIn", "1");
  } catch {
    // storage blocked: the dashboard's devices list still has the button
  }
}

/** Runs one ceremony at a time; shows its failure in `region`. */
async function run(button, region, work, after = null) {
  if (working) return;
  working = true;
  showMessage(notice, "", "");
  showMessage(registerNotice, "", "");
  try {
    await busy(button, work);
    after?.();
    window.location.assign("/dashboard");
  } catch (err) {
    showMessage(region, "error", describe(err));
  } finally {
    working = false;
  }
}

function describe(err) {
  return err?.message || "Something went wrong. Try again.";
}

signinBtn.addEventListener("click", () => run(signinBtn, notice, signIn, markSignedIn));

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const name = nameInput.value.trim();
  if (!name) {
    nameInput.setAttribute("aria-invalid", "true");
    showMessage(registerNotice, "error", "Enter your name to create an account.");
    nameInput.focus();
    return;
  }
  nameInput.removeAttribute("aria-invalid");
  run(registerBtn, registerNotice, () => register(name));
});
