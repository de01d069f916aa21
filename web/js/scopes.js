// The endpoint scopes a grant can hold, in plain words: the one place the consent page
// (connect.js) and the dashboard (dashboard.js) take them from. The set and the sentences are
// keygate's wire contract (docs/API.md); a grant without `scopes` predates them.

/** Every scope keygate knows, in the order pages list them. */
export const SCOPES = [
  {
    id: "inference",
    label: "Use models",
    short: "model calls",
    words: "Use models: chat, responses, embeddings, moderation, audio and images, and list models",
  },
  { id: "files", label: "Files", short: "files", words: "Upload, list, download and delete files in your OpenAI account" },
  { id: "batches", label: "Batches", short: "batches", words: "Start, list and cancel batch jobs" },
  { id: "fine_tuning", label: "Fine-tuning", short: "fine-tuning", words: "Start and manage fine-tuning jobs" },
  { id: "assistants", label: "Assistants", short: "assistants", words: "Use assistants, threads and vector stores" },
  { id: "stored", label: "Stored outputs", short: "stored outputs", words: "Read and delete your stored chat completions and responses" },
];

/** What a grant gets when nobody asked for anything else. */
export const DEFAULT_SCOPES = ["inference"];

const BY_ID = new Map(SCOPES.map((s) => [s.id, s]));

/** The scope called `id`, or null for one keygate doesn't know. */
export function scope(id) {
  return BY_ID.get(id) || null;
}

/** `ids` in SCOPES order, without duplicates; unknown ids are left out. */
export function sortScopes(ids) {
  const wanted = new Set(ids || []);
  return SCOPES.filter((s) => wanted.has(s.id)).map((s) => s.id);
}

/**
 * Reads what an app asked for: an array or a comma-separated string (the redirect query's
 * `scopes=inference,files`). Returns {scopes, unknown}: the known ones in SCOPES order
 * (DEFAULT_SCOPES when nothing was asked) and the names keygate doesn't know.
 */
export function parseRequested(value) {
  let list = [];
  if (Array.isArray(value)) list = value;
  else if (typeof value === "string") list = value.split(",");
  list = list.map((v) => String(v).trim()).filter(Boolean);
  if (!list.length) return { scopes: [...DEFAULT_SCOPES], unknown: [] };
  const unknown = [...new Set(list.filter((id) => !BY_ID.has(id)))];
  return { scopes: sortScopes(list), unknown };
}
