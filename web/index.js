// Shows this keygate's own base URL in the examples.
const base = `${window.location.origin}/v1`;
document.getElementById("base").textContent = base;
for (const el of document.querySelectorAll(".base-url")) el.textContent = base;
