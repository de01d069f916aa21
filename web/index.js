// The landing page: shows this keygate's own base URL in the examples, and, for a person who
// is signed in, links to their dashboard instead of offering to sign in.

import { call } from "./js/http.js";

const base = `${window.location.origin}/v1`;
document.getElementById("base").textContent = base;
for (const el of document.querySelectorAll(".base-url")) el.textContent = base;

call("GET", "/api/me", undefined, { redirectOn401: false })
  .then((me) => {
    if (!me) return;
    const first = typeof me.name === "string" ? me.name.trim().split(/\s+/)[0] : "";
    const nav = document.getElementById("nav-signin");
    nav.textContent = "Open dashboard";
    nav.href = "/dashboard";
    const cta = document.getElementById("cta-primary");
    cta.textContent = "Open your dashboard";
    cta.href = "/dashboard";
    document.getElementById("cta-secondary").hidden = true;
    const who = document.getElementById("signed-in-as");
    who.textContent = first ? `You’re signed in as ${first}.` : "You’re signed in.";
    who.hidden = false;
  })
  .catch(() => {
    // Not signed in (or keygate unreachable): the page stays as it is.
  });
