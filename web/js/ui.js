// Dialogs and toasts shared by keygate's pages.

import { busy, h, icon, showMessage } from "./dom.js";

let dialogCount = 0;

/**
 * A modal confirmation (<dialog>), the only one on keygate's pages: confirmations of
 * destructive changes and the passkey step-up (stepup.js) both use it. When confirmed,
 * `action` runs with the confirm button busy; an error it throws is shown inside the dialog
 * so the person can retry or cancel. Resolves to true when the action succeeded, false when
 * the person cancelled.
 *
 * typeToConfirm: a phrase the person must type before the confirm button does anything.
 * confirmIcon: an icon shown in the confirm button (e.g. "passkey").
 * focus: "cancel" (default, the safe choice) or "confirm" — what has focus when it opens.
 * id: an id for the <dialog> element.
 */
export function confirmDialog({
  title,
  message,
  confirmLabel = "Confirm",
  cancelLabel = "Cancel",
  danger = false,
  iconName = danger ? "warning" : "info",
  confirmIcon = null,
  typeToConfirm = null,
  focus = "cancel",
  id = null,
  action = null,
}) {
  return new Promise((resolve) => {
    const n = ++dialogCount;
    const titleId = `dialog-title-${n}`;
    const descId = `dialog-desc-${n}`;
    const errors = h("div", { "aria-live": "polite" });
    let running = false;
    let succeeded = false;

    let input = null;
    let field = null;
    if (typeToConfirm) {
      const inputId = `dialog-input-${n}`;
      input = h("input", {
        id: inputId,
        type: "text",
        autocomplete: "off",
        autocapitalize: "off",
        spellcheck: "false",
      });
      field = h(
        "div",
        { class: "field" },
        h("label", { for: inputId }, "To confirm, type ", h("strong", {}, typeToConfirm), " below"),
        input,
      );
    }

    input?.addEventListener("input", () => {
      input.removeAttribute("aria-invalid");
      showMessage(errors, "error", "");
    });

    const cancelBtn = h("button", { type: "button", class: "btn" }, cancelLabel);
    const confirmBtn = h(
      "button",
      { type: "submit", class: `btn ${danger ? "btn-danger" : "btn-primary"}` },
      confirmIcon ? icon(confirmIcon) : null,
      confirmLabel,
    );

    const form = h(
      "form",
      { method: "dialog", novalidate: true },
      h(
        "div",
        { class: "dialog-body" },
        h("div", { class: `dialog-icon${danger ? " is-danger" : ""}` }, icon(iconName)),
        h("h2", { id: titleId }, title),
        h("p", { id: descId }, message),
        field,
        errors,
      ),
      h("div", { class: "dialog-actions" }, cancelBtn, confirmBtn),
    );
    const dialog = h("dialog", { id, "aria-labelledby": titleId, "aria-describedby": descId }, form);

    cancelBtn.addEventListener("click", () => {
      if (!running) dialog.close();
    });
    dialog.addEventListener("cancel", (event) => {
      if (running) event.preventDefault();
    });
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(succeeded);
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (running) return;
      if (input && input.value.trim().toLowerCase() !== typeToConfirm.toLowerCase()) {
        input.setAttribute("aria-invalid", "true");
        showMessage(errors, "error", `Type “${typeToConfirm}” exactly to confirm.`);
        input.focus();
        return;
      }
      running = true;
      showMessage(errors, "error", "");
      try {
        if (action) await busy(confirmBtn, action);
        succeeded = true;
        dialog.close();
      } catch (err) {
        showMessage(errors, "error", err?.message || "That didn't work. Try again.");
      } finally {
        running = false;
      }
    });

    document.body.append(dialog);
    dialog.showModal();
    (input || (focus === "confirm" ? confirmBtn : cancelBtn)).focus();
  });
}

let toastRegion = null;

/** The polite live region toasts go into; created when the page loads. */
function region() {
  if (!toastRegion) {
    toastRegion = h("div", { class: "toast-region", role: "status", "aria-live": "polite" });
    document.body.append(toastRegion);
  }
  return toastRegion;
}

if (document.body) region();
else document.addEventListener("DOMContentLoaded", region, { once: true });

/** A short message at the bottom of the screen, gone after a few seconds. */
export function toast(message, kind = "success") {
  const el = h(
    "div",
    { class: `toast${kind === "error" ? " toast-error" : ""}` },
    icon(kind === "error" ? "alert" : "check"),
    h("span", {}, message),
  );
  region().append(el);
  setTimeout(() => el.remove(), 6000);
}
