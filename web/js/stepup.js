// Step-up: keygate asks for a fresh passkey check before sensitive changes (replacing or
// deleting the OpenAI key, removing a passkey, deleting the account). api.js calls this on
// `fresh_passkey_required`, then retries the request once.
//
// The check runs from a click in this dialog, so the browser's passkey prompt always follows
// a user gesture.

import { ApiError } from "./api.js";
import { busy, h, icon, showMessage } from "./dom.js";
import { reauthenticate } from "./passkey.js";

let pending = null;

/** Resolves once the person has confirmed with a passkey; rejects if they give up. */
export function confirmWithPasskey() {
  if (!pending) {
    pending = ask().finally(() => {
      pending = null;
    });
  }
  return pending;
}

function ask() {
  return new Promise((resolve, reject) => {
    const errors = h("div", { "aria-live": "polite" });
    let running = false;
    let confirmed = false;

    const cancelBtn = h("button", { type: "button", class: "btn" }, "Cancel");
    const goBtn = h(
      "button",
      { type: "submit", class: "btn btn-primary", id: "stepup-confirm" },
      icon("passkey"),
      "Use passkey",
    );
    const form = h(
      "form",
      { method: "dialog" },
      h(
        "div",
        { class: "dialog-body" },
        h("div", { class: "dialog-icon" }, icon("shield")),
        h("h2", { id: "stepup-title" }, "Confirm it’s you"),
        h(
          "p",
          { id: "stepup-desc" },
          "This is a sensitive change, so keygate asks for your passkey once more. It only takes a moment.",
        ),
        errors,
      ),
      h("div", { class: "dialog-actions" }, cancelBtn, goBtn),
    );
    const dialog = h(
      "dialog",
      { id: "stepup-dialog", "aria-labelledby": "stepup-title", "aria-describedby": "stepup-desc" },
      form,
    );

    cancelBtn.addEventListener("click", () => {
      if (!running) dialog.close();
    });
    dialog.addEventListener("cancel", (event) => {
      if (running) event.preventDefault();
    });
    dialog.addEventListener("close", () => {
      dialog.remove();
      if (confirmed) resolve();
      else
        reject(
          new ApiError("You didn’t confirm with your passkey, so nothing was changed.", {
            code: "step_up_cancelled",
          }),
        );
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (running) return;
      running = true;
      showMessage(errors, "error", "");
      try {
        await busy(goBtn, reauthenticate);
        confirmed = true;
        dialog.close();
      } catch (err) {
        showMessage(errors, "error", err?.message || "That didn't work. Try again.");
      } finally {
        running = false;
      }
    });

    document.body.append(dialog);
    dialog.showModal();
    goBtn.focus();
  });
}
