// The code a person copies after creating an app key: JavaScript, Python and curl, each with
// the real key and base URL. The text shown is exactly the text copied; highlighting only
// wraps parts of it in spans.

import { h } from "./dom.js";

export const LANGUAGES = [
  { id: "js", label: "JavaScript" },
  { id: "python", label: "Python" },
  { id: "curl", label: "curl" },
];

/** One call per scope that shows the key works, for a grant that can't use models. */
const LIST_CALLS = {
  files: { js: "client.files.list()", python: "client.files.list()", path: "/files" },
  batches: { js: "client.batches.list()", python: "client.batches.list()", path: "/batches" },
  fine_tuning: {
    js: "client.fineTuning.jobs.list()",
    python: "client.fine_tuning.jobs.list()",
    path: "/fine_tuning/jobs",
  },
  assistants: {
    js: "client.beta.assistants.list()",
    python: "client.beta.assistants.list()",
    path: "/assistants",
    header: "OpenAI-Beta: assistants=v2",
  },
  stored: { js: "client.chat.completions.list()", python: "client.chat.completions.list()", path: "/chat/completions" },
};

/**
 * The three snippets for a new key, as plain text: {js, python, curl}. `grant` (optional) is
 * the new grant: its first allowed model and its scopes choose the example call.
 */
export function snippetsFor(apiKey, baseURL, grant = null) {
  const model = (Array.isArray(grant?.models) && grant.models[0]) || "gpt-4o-mini";
  const scopes = Array.isArray(grant?.scopes) ? grant.scopes : null;
  const chat = !scopes || scopes.includes("inference");
  const list = chat ? null : LIST_CALLS[scopes.find((s) => LIST_CALLS[s])] || null;
  const k = JSON.stringify(apiKey);
  const b = JSON.stringify(baseURL);
  const base = baseURL.replace(/\/+$/, "");

  const js = ['import OpenAI from "openai";', "", "const client = new OpenAI({", `  apiKey: ${k},`, `  baseURL: ${b},`, "});", ""];
  const python = ["from openai import OpenAI", "", "client = OpenAI(", `    api_key=${k},`, `    base_url=${b},`, ")", ""];
  let curl;
  if (chat) {
    const m = JSON.stringify(model);
    js.push(
      "const reply = await client.chat.completions.create({",
      `  model: ${m},`,
      '  messages: [{ role: "user", content: "Hello!" }],',
      "});",
      "console.log(reply.choices[0].message.content);",
    );
    python.push(
      "reply = client.chat.completions.create(",
      `    model=${m},`,
      '    messages=[{"role": "user", "content": "Hello!"}],',
      ")",
      "print(reply.choices[0].message.content)",
    );
    curl = [
      `curl ${base}/chat/completions \\`,
      `  -H "Authorization: Bearer ${apiKey}" \\`,
      '  -H "Content-Type: application/json" \\',
      `  -d '{"model": ${m}, "messages": [{"role": "user", "content": "Hello!"}]}'`,
    ];
  } else if (list) {
    js.push(`console.log(await ${list.js});`);
    python.push(`print(${list.python})`);
    curl = [`curl ${base}${list.path} \\`];
    if (list.header) curl.push(`  -H "${list.header}" \\`);
    curl.push(`  -H "Authorization: Bearer ${apiKey}"`);
  } else {
    js.pop();
    python.pop();
    curl = [`curl ${base}/... \\`, `  -H "Authorization: Bearer ${apiKey}"`];
  }
  return { js: js.join("\n"), python: python.join("\n"), curl: curl.join("\n") };
}

// Strings, then comments (only where a line or a space lets one start: never the "//" of a URL),
// then keywords.
const TOKENS = /("(?:[^"\\\n]|\\.)*"|'[^'\n]*')|((?<=^|\s)(?:\/\/|#)[^\n]*)|\b(import|from|const|new|await|curl)\b/gm;

/** `text` as DOM nodes with strings, comments and keywords in highlight spans. */
export function highlight(text) {
  const out = [];
  let last = 0;
  for (const match of text.matchAll(TOKENS)) {
    if (match.index > last) out.push(text.slice(last, match.index));
    const [whole, str, comment] = match;
    const cls = str ? "tok-s" : comment ? "tok-c" : "tok-k";
    out.push(h("span", { class: cls }, whole));
    last = match.index + whole.length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}
