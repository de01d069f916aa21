// The structure of keygate's page scripts (web/js and web/index.js), read from the files: their
// imports form no cycle (issue 9 broke api → stepup → passkey → api), there is one dialog
// builder (ui.js's confirmDialog, also used by the step-up), and the scopes' words exist in one
// module only. No browser needed.

import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";

import { ROOT } from "./connect/helpers.mjs";

const WEB = path.join(ROOT, "web");
const JS = path.join(WEB, "js");

/** Every page script: web/js/*.js and web/index.js, with its source. */
function scripts() {
  const files = readdirSync(JS)
    .filter((f) => f.endsWith(".js"))
    .map((f) => path.join(JS, f));
  files.push(path.join(WEB, "index.js"));
  return files.map((file) => ({ file, name: path.relative(WEB, file), source: readFileSync(file, "utf8") }));
}

/** The relative modules a source imports, statically or with import(). */
function importsOf(file, source) {
  const found = new Set();
  const patterns = [/\bimport\s[^;]*?\sfrom\s*["'](\.[^"']+)["']/g, /\bimport\s*\(\s*["'](\.[^"']+)["']\s*\)/g, /\bexport\s[^;]*?\sfrom\s*["'](\.[^"']+)["']/g];
  for (const re of patterns) {
    for (const match of source.matchAll(re)) found.add(path.relative(WEB, path.resolve(path.dirname(file), match[1])));
  }
  return [...found];
}

test("web/js imports form no cycle", () => {
  const all = scripts();
  const graph = new Map(all.map(({ file, name, source }) => [name, importsOf(file, source)]));
  for (const [name, deps] of graph) {
    for (const dep of deps) assert.ok(graph.has(dep), `${name} imports ${dep}, which is not a page script`);
  }
  // Depth-first search; a module met again while still on the path closes a cycle.
  const state = new Map(); // name → "visiting" | "done"
  const visit = (name, trail) => {
    if (state.get(name) === "done") return;
    if (state.get(name) === "visiting") {
      assert.fail(`import cycle: ${[...trail.slice(trail.indexOf(name)), name].join(" → ")}`);
    }
    state.set(name, "visiting");
    for (const dep of graph.get(name)) visit(dep, [...trail, name]);
    state.set(name, "done");
  };
  for (const name of graph.keys()) visit(name, []);
  // The cycle issue 9 named stays broken.
  assert.ok(!graph.get("js/passkey.js").includes("js/api.js"), "passkey.js must not import api.js");
});

test("one dialog builder: ui.js's confirmDialog (the step-up uses it too)", () => {
  const builders = scripts()
    .filter(({ source }) => /h\(\s*["']dialog["']|createElement\(\s*["']dialog["']/.test(source))
    .map(({ name }) => name);
  assert.deepEqual(builders, ["js/ui.js"]);
  const stepup = readFileSync(path.join(JS, "stepup.js"), "utf8");
  assert.match(stepup, /import \{ confirmDialog \} from "\.\/ui\.js"/);
});

test("the scopes' plain words live in scopes.js only", async () => {
  const { SCOPES } = await import(path.join(JS, "scopes.js"));
  assert.deepEqual(
    SCOPES.map((s) => s.id),
    ["inference", "files", "batches", "fine_tuning", "assistants", "stored"],
  );
  for (const { name, source } of scripts()) {
    if (name === "js/scopes.js") continue;
    for (const s of SCOPES) assert.ok(!source.includes(s.words), `${name} repeats the words of ${s.id}`);
  }
  for (const page of ["connect.html", "dashboard.html"]) {
    const html = readFileSync(path.join(WEB, page), "utf8");
    for (const s of SCOPES) assert.ok(!html.includes(s.words), `${page} repeats the words of ${s.id}`);
  }
});
